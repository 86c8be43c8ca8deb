-- The rate-limit decisions of several requests, in the order they arrived, atomically: each as
-- if it had been a call of its own, one after the other.
--
-- The same algorithm as src/limit (window.rs and Limiter::check_matched), line for line, so a
-- Redis-backed replica decides exactly as an in-process one would: a sliding window over two
-- fixed windows, counted in integers. Each counter is a hash {s = window start, p = previous
-- window's count, c = current window's count} that expires when it can no longer weigh.
--
-- ARGV holds the requests one after another, each as:
--   the time in milliseconds, or "" for Redis's own clock (what production uses, so replicas
--     whose clocks disagree still share one window; read once per call);
--   how many requests to count (a gateway's hits_addend: all of them fit, or none is counted),
--     or 0 to decide about one without counting (a caller who may only ask);
--   n, the number of counters (one per matching rule: global, ip, api_key, user in that order);
--   then per counter its window in milliseconds, its limit, and 1 for a shadow rule.
-- KEYS holds the requests' counters in the same order, n per request.
--
-- Returns, per request in order: allowed, then per counter: allowed, remaining, reset_ms,
-- count, window start. Lua numbers are doubles: the products below are exact while
-- limit × window_ms < 2^53.
--
-- A counter is read from Redis once per call and written once at its end; in between, each
-- request sees what the requests before it stored, as separate calls would have.

local redis_now
local function clock(arg)
  local t = tonumber(arg)
  if t then return t end
  if not redis_now then
    local r = redis.call('TIME')
    redis_now = tonumber(r[1]) * 1000 + math.floor(tonumber(r[2]) / 1000)
  end
  return redis_now
end

-- What each counter holds as stored so far: what Redis had, then what the requests counted.
local stored = {}
-- The counters to write at the end, in the order first counted, and their windows.
local written, window_of = {}, {}
local function load(key)
  local k = stored[key]
  if not k then
    local h = redis.call('HMGET', key, 's', 'p', 'c')
    k = {s = tonumber(h[1]) or 0, p = tonumber(h[2]) or 0, c = tonumber(h[3]) or 0}
    stored[key] = k
  end
  return k
end

local function outcome(now, max, w, s, p, c)
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

-- One request's counters as it decides them, in arrays reused from request to request (a table
-- per counter per request would be most of the script's allocations).
local c_key, c_w, c_s, c_p, c_c, c_counted, c_shadow = {}, {}, {}, {}, {}, {}, {}

local reply = {}
local r = 0
local a, key_at = 1, 0
while a <= #ARGV do
  local now = clock(ARGV[a])
  local hits = tonumber(ARGV[a + 1])
  local n = tonumber(ARGV[a + 2])
  local counting = hits > 0
  local need = math.max(hits, 1)
  local allowed = true
  local first = r + 1
  r = first
  reply[first] = 0
  for i = 1, n do
    local key = KEYS[key_at + i]
    local at = a + 3 * i
    local w = tonumber(ARGV[at])
    local max = tonumber(ARGV[at + 1])
    local shadow = ARGV[at + 2] == '1'
    local k = load(key)
    local s, p, c = k.s, k.p, k.c
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
    local remaining, reset = outcome(now, max, w, s, p, c)
    if not shadow and not admits then allowed = false end
    c_key[i], c_w[i], c_s[i], c_p[i], c_c[i], c_counted[i], c_shadow[i] = key, w, s, p, c, counted, shadow
    reply[r + 1] = admits and 1 or 0
    reply[r + 2] = remaining
    reply[r + 3] = reset
    reply[r + 4] = 0
    reply[r + 5] = s
    r = r + 5
  end
  -- A refused request is counted by no enforced rule; shadow rules keep their own count.
  for i = 1, n do
    local key, c, counted = c_key[i], c_c[i], c_counted[i]
    if counted and not c_shadow[i] and not allowed then
      c = c - hits
      counted = false
    end
    if counted then
      -- What a call of its own would have stored, for the requests after it.
      local k = stored[key]
      k.s, k.p, k.c = c_s[i], c_p[i], c
      if not window_of[key] then written[#written + 1] = key end
      window_of[key] = c_w[i]
    end
    reply[first + 5 * (i - 1) + 4] = c
  end
  reply[first] = allowed and 1 or 0
  a = a + 3 + 3 * n
  key_at = key_at + n
end

for _, key in ipairs(written) do
  local k = stored[key]
  redis.call('HSET', key, 's', k.s, 'p', k.p, 'c', k.c)
  redis.call('PEXPIREAT', key, k.s + 2 * window_of[key])
end
return reply
