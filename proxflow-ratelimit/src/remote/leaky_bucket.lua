-- nginx `limit_req` without `nodelay`: `leaky_bucket` in algorithm.rs. Requests leave one per
-- interval; up to `burst` wait their turn (or up to the longest wait, if longer), the rest are
-- refused. ARGV: the interval (us), burst, the longest wait (us). State: when the next request
-- may leave; it expires then.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])

local room = math.max(interval * burst, max_wait)
local wait = 0
local next_free = tonumber(redis.call('GET', key))
if next_free and next_free > now then
  wait = next_free - now
end
if wait > room then
  return {0, 0, 0, ns(wait - room)}
end
local after = wait + interval
redis.call('SET', key, exact(now + after), 'PX', ms(after))
local queued = math.ceil(after / interval - 1e-9)
local remaining = burst - math.max(queued - 1, 0)
if remaining < 0 then
  remaining = 0
end
return {1, ns(wait), remaining, ns(after)}
