-- The synced mode's record of a sliding window key (exact or approximate): `synced.rs`. An
-- instance adds the admissions it made since its last sync and learns how many the others
-- made. ARGV: the admissions, per (us), how long the record outlives its state (us). State:
-- "epoch total window previous current": when the record was made, every admission added to
-- it since, and the two-counter approximation of the window over them all, each counted when
-- it was added (`sliding_counter_fold` in algorithm.rs). It expires `linger` after its counts
-- have left the window, so the instances that keep syncing the key keep it.
--
-- Answers {epoch, total, held}: an instance that synced the record before takes the others'
-- admissions from the growth of `total`; one that has not (a key new to it, or a record made
-- again after it expired or Redis lost it) takes the window's estimate, `held`.
local count = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local linger = tonumber(ARGV[3])

local window = math.floor(now / per)
local left = per - (now - window * per)
local epoch, total, previous, current = now, 0, 0, 0
local state = redis.call('GET', key)
if state then
  local e, t, w, p, c = string.match(state, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if e then
    epoch, total, w = tonumber(e), tonumber(t), tonumber(w)
    if w == window then
      previous, current = tonumber(p), tonumber(c)
    elseif w == window - 1 then
      previous = tonumber(c)
    end
  end
end
current = current + count
total = total + count
local text = exact(epoch) .. ' ' .. exact(total) .. ' ' .. exact(window) .. ' '
  .. exact(previous) .. ' ' .. exact(current)
redis.call('SET', key, text, 'PX', ms(left + per + linger))
return {epoch, total, math.ceil(previous * left / per + current - 1e-9)}
