-- The start of every script of the Redis mode. Each script of the exact mode decides for one
-- request of one key (KEYS[1]) atomically, on Redis's clock, and answers {admit, wait,
-- remaining, after}: admit is 1 or 0; wait (ns) is how long an admitted request waits for its
-- turn; remaining is the requests left now; after (ns) is, for an admission, when the key is
-- whole again and, for a refusal, when the same request would be admitted. These are what the
-- algorithms of algorithm.rs return, and the RateLimit fields and Retry-After are made from
-- them. The synced mode's scripts (sync_*.lua) add one instance's admissions to a key's record
-- and answer what it needs to learn the others' (see each).
--
-- Times are microseconds since 1,700,000,000 s (2023-11-14) as doubles: TIME reads whole
-- microseconds, and at this size a double still holds fractions of one (1/64 now, 1/4 in
-- 2060), so fractional intervals (3 per second) add up without drift. Keys expire when their state equals a new
-- key's, so Redis keeps only the state of clients seen recently.

-- Scripts that read TIME and then write are replicated by their effects (the default from
-- Redis 5 on; needed on 3.2 and 4).
if redis.replicate_commands then
  redis.replicate_commands()
end

local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) * 1000000 + tonumber(clock[2])

-- A number as text that reads back as the same double (tostring keeps 14 digits). Whole
-- numbers print without a fraction, so Redis keeps them as integers.
local function exact(x)
  return string.format('%.17g', x)
end

-- A duration in whole nanoseconds, rounded up, for the answer.
local function ns(us)
  return math.ceil(us * 1000)
end

-- An expiry in whole milliseconds, rounded up, at least 1.
local function ms(us)
  local m = math.ceil(us / 1000)
  if m < 1 then
    m = 1
  end
  return m
end

local key = KEYS[1]
