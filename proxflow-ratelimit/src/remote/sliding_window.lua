-- The exact sliding log: `sliding_log` in algorithm.rs. At most `rate` admissions in any
-- window of `per`. ARGV: rate, per (us). State: a list of when each admission in the window
-- leaves it, oldest first, in whole microseconds (rounded up: an admission never leaves early)
-- so that Redis packs them as integers; the list expires when its newest entry leaves.
local rate = tonumber(ARGV[1])
local per = tonumber(ARGV[2])

while true do
  local oldest = redis.call('LINDEX', key, 0)
  if not oldest or tonumber(oldest) > now then
    break
  end
  redis.call('LPOP', key)
end
local count = redis.call('LLEN', key)
if count >= rate then
  -- The oldest admission in the window leaves it first.
  return {0, 0, 0, ns(tonumber(redis.call('LINDEX', key, 0)) - now)}
end
local leaves = math.ceil(now + per)
redis.call('RPUSH', key, exact(leaves))
redis.call('PEXPIRE', key, ms(leaves - now))
local oldest = tonumber(redis.call('LINDEX', key, 0))
return {1, 0, rate - count - 1, ns(oldest - now)}
