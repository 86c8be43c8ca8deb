-- One request's rate-limit decision over every rule that applies to it, atomically.
--
-- The same algorithm as src/limit (window.rs and Limiter::check_matched), line for line, so a
-- Redis-backed replica decides exactly as an in-process one would: a sliding window over two
-- fixed windows, counted in integers. Each counter is a hash {s = window start, p = previous
-- window's count, c = current window's count} that expires when it can no longer weigh.
--
-- KEYS[i]: counter i (one per matching rule, global, ip, api_key, user in that order).
-- ARGV[1]: the time in milliseconds, or "" for Redis's own clock (what production uses, so
--          replicas whose clocks disagree still share one window).
-- ARGV[2]: how many requests to count (a gateway's hits_addend: all of them fit, or none is
--          counted), or 0 to decide about one without counting (a caller who may only ask).
-- ARGV[3 + 3(i-1) ..]: counter i's window in milliseconds, its limit, and 1 for a shadow rule.
--
-- Returns {allowed, then per counter: allowed, remaining, reset_ms, count, window start}.
-- Lua numbers are doubles: the products below are exact while limit × window_ms < 2^53.

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function outcome(max, w, s, p, c)
  local elapsed = now - s
  local used = p * (w - elapsed) + c * w
  local budget = max * w
  local remaining = 0
  if budget > used then remaining = math.floor((budget - used) / w) end
  if remaining > 0 then return remaining, w - elapsed end
  -- Milliseconds until one more request fits (window.rs, wait_ms).
  if max == 0 then return 0, w end
  if c < max then
    local needed = 0
    if p > 0 then needed = w - math.min(math.floor((max - c - 1) * w / p), w) end
    return 0, math.max(needed - elapsed, 1)
  end
  local needed = w - math.min(math.floor((max - 1) * w / c), w)
  return 0, (w - elapsed) + needed
end

local hits = tonumber(ARGV[2])
local counting = hits > 0
local need = math.max(hits, 1)
local allowed = true
local state = {}
local reply = {0}
for i = 1, #KEYS do
  local w = tonumber(ARGV[3 * i])
  local max = tonumber(ARGV[3 * i + 1])
  local shadow = ARGV[3 * i + 2] == '1'
  local h = redis.call('HMGET', KEYS[i], 's', 'p', 'c')
  local s, p, c = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  -- Roll to the window that holds `now`.
  local start = now - now % w
  if start ~= s then
    if start == s + w then p = c else p = 0 end
    c = 0
    s = start
  end
  local count = counting and (shadow or allowed)
  local admits = max > 0 and p * (w - (now - s)) + (c + need) * w <= max * w
  local counted = count and admits
  if counted then c = c + hits end
  local remaining, reset = outcome(max, w, s, p, c)
  if not shadow and not admits then allowed = false end
  state[i] = {w = w, s = s, p = p, c = c, counted = counted, shadow = shadow}
  reply[#reply + 1] = admits and 1 or 0
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = 0
  reply[#reply + 1] = s
end

-- A refused request is counted by no enforced rule; shadow rules keep their own count.
for i, k in ipairs(state) do
  if k.counted and not k.shadow and not allowed then
    k.c = k.c - hits
    k.counted = false
  end
  if k.counted then
    redis.call('HSET', KEYS[i], 's', k.s, 'p', k.p, 'c', k.c)
    redis.call('PEXPIREAT', KEYS[i], k.s + 2 * k.w)
  end
  reply[1 + 5 * (i - 1) + 4] = k.c
end
reply[1] = allowed and 1 or 0
return reply
