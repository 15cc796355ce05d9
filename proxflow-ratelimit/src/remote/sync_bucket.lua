-- The synced mode's record of a token or leaky bucket key: `synced.rs`. An instance adds the
-- admissions it made since its last sync and learns how many the others made. ARGV: the
-- admissions, the emission interval (us), how long the record outlives its state (us). State:
-- "epoch total tat": when the record was made, every admission added to it since, and the
-- theoretical arrival time of them all, each counted when it was added (`bucket_fold` in
-- algorithm.rs). It expires `linger` after the TAT passes, so the instances that keep syncing
-- the key keep it.
--
-- Answers {epoch, total, held}: an instance that synced the record before takes the others'
-- admissions from the growth of `total`; one that has not (a key new to it, or a record made
-- again after it expired or Redis lost it) takes the admissions the TAT still holds, `held`.
local count = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local linger = tonumber(ARGV[3])

local epoch, total, tat = now, 0, now
local state = redis.call('GET', key)
if state then
  local e, t, a = string.match(state, '^(%S+) (%S+) (%S+)$')
  if e then
    epoch, total, tat = tonumber(e), tonumber(t), tonumber(a)
  end
end
if tat < now then
  tat = now
end
tat = tat + count * interval
total = total + count
redis.call('SET', key, exact(epoch) .. ' ' .. exact(total) .. ' ' .. exact(tat),
  'PX', ms(tat - now + linger))
return {epoch, total, math.ceil((tat - now) / interval - 1e-9)}
