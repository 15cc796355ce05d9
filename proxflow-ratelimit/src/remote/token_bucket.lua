-- GCRA, the token bucket as a theoretical arrival time (TAT): `gcra_reserve` in algorithm.rs.
-- ARGV: the emission interval, tau = (burst - 1) x interval, and the longest wait (reject:
-- delay), all in microseconds. State: the TAT; it expires when the TAT passes, where a bucket
-- is full again.
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])

-- How far the TAT is ahead of now: near each other, so the difference is exact.
local ahead = 0
local tat = tonumber(redis.call('GET', key))
if tat and tat > now then
  ahead = tat - now
end
local wait = ahead - tau
if wait < 0 then
  wait = 0
end
if wait > max_wait then
  return {0, 0, 0, ns(wait - max_wait)}
end
local after = ahead + interval
redis.call('SET', key, exact(now + after), 'PX', ms(after))
local remaining = math.floor((tau - ahead) / interval + 1e-9)
if remaining < 0 then
  remaining = 0
end
return {1, ns(wait), remaining, ns(after)}
