-- The two-counter approximation of the sliding window: `sliding_counter` in algorithm.rs.
-- ARGV: rate, per (us). State: "window previous current", the fixed window's number and the
-- counts of the one before and of this one; it expires two windows after its own began.
local rate = tonumber(ARGV[1])
local per = tonumber(ARGV[2])

local window = math.floor(now / per)
local elapsed = now - window * per
local left = per - elapsed
local previous, current = 0, 0
local state = redis.call('GET', key)
if state then
  local w, p, c = string.match(state, '^(%d+) (%d+) (%d+)$')
  w, p, c = tonumber(w), tonumber(p), tonumber(c)
  if w == window then
    previous, current = p, c
  elseif w == window - 1 then
    previous = c
  end
end

-- The previous window's count, weighted by how much of it the sliding window still covers,
-- plus the current window's.
local function estimate(c)
  return previous * left / per + c
end

if estimate(current) < rate then
  current = current + 1
  local text = exact(window) .. ' ' .. exact(previous) .. ' ' .. exact(current)
  redis.call('SET', key, text, 'PX', ms(left + per))
  local remaining = rate - math.ceil(estimate(current) - 1e-9)
  if remaining < 0 then
    remaining = 0
  end
  return {1, 0, remaining, ns(left)}
end
-- The estimate falls as the previous window slides out; past the window's end only the
-- current count remains.
local retry = left
if current < rate and previous > 0 then
  -- previous x (per - e) / per + current < rate  <=>  e > per - (rate - current) x per / previous
  local target = per - (rate - current) * per / previous
  retry = math.max(target - elapsed, 0) + 0.001
end
return {0, 0, 0, ns(retry)}
