-- Shared by every permitd script (prepended by the Rust side, so each script stays one
-- self-contained EVALSHA). Time is Redis TIME in microseconds, so replica clocks never
-- matter. A limit slot is an exact integer GCRA kept as "ahead": how far its theoretical
-- arrival time is past now, in units of 1/a microseconds, where a/p microseconds is the
-- limit's rate reduced by its gcd. Integers stay below 2^53, exact in Lua's doubles: the
-- engine refuses limits whose burst * p reaches 2^52 (`exact_in_lua` on the Rust side), and
-- `ahead` never exceeds (burst + cost) * p <= 2 * burst * p.
-- Numbers go to Redis as exact integer text: Lua 5.1's own number-to-string conversion
-- keeps only 14 significant digits, which would round microsecond timestamps.
local function int(x)
  return string.format('%.0f', x)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The slot's "ahead" at `now`, decayed since it was last written.
local function ahead_of(key, name, a, now)
  local v = redis.call('HMGET', key, 'a' .. name, 't' .. name)
  local ahead = tonumber(v[1] or '0') or 0
  local last = tonumber(v[2] or '0') or 0
  if ahead <= 0 then return 0 end
  local elapsed = now - last
  if elapsed <= 0 then return ahead end
  if elapsed >= math.ceil(ahead / a) then return 0 end
  return ahead - elapsed * a
end

local function put_ahead(key, name, ahead, now)
  redis.call('HSET', key, 'a' .. name, int(ahead), 't' .. name, int(now))
end

-- Microseconds until `c` units fit in slot `s` holding `ahead` (0: they fit now).
local function wait_for(s, ahead, c)
  local need = ahead + c * s.p - s.b * s.p
  if c > 0 and need > 0 then return math.ceil(need / s.a) end
  return 0
end

-- The slot's "ahead" once `c` units are taken.
local function taken(s, ahead, c)
  return ahead + c * s.p
end

-- Whole units available (what GetQuota and `remaining` show).
local function available(s, ahead)
  local room = s.b * s.p - ahead
  if room <= 0 then return 0 end
  return math.floor(room / s.p)
end

-- Limit slots: the configured ones from ARGV (7 fields each: which KEYS index, name, a, p,
-- burst, dimension, period_us), then the learned ones of the home bucket from its learned hash
-- (field "<dim>:<period_us>", value "a,p,burst").
local function read_slots(argv, i, learned, home)
  local slots = {}
  local n = tonumber(argv[i]); i = i + 1
  for _ = 1, n do
    slots[#slots + 1] = {
      key = KEYS[tonumber(argv[i])], name = argv[i + 1], a = tonumber(argv[i + 2]),
      p = tonumber(argv[i + 3]), b = tonumber(argv[i + 4]), dim = tonumber(argv[i + 5]),
      period = tonumber(argv[i + 6]), learned = false,
    }
    i = i + 7
  end
  local lv = redis.call('HGETALL', learned)
  for j = 1, #lv, 2 do
    local dim, period = string.match(lv[j], '^(%d+):(%d+)$')
    local a, p, b = string.match(lv[j + 1], '^(%d+),(%d+),(%d+)$')
    if dim and a then
      slots[#slots + 1] = {
        key = home, name = 'l' .. lv[j] .. '/' .. lv[j + 1], a = tonumber(a), p = tonumber(p),
        b = tonumber(b), dim = tonumber(dim), learned = true, period = tonumber(period),
      }
    end
  end
  return slots, i
end

-- Drop expired leases (bounded per call; the rest go on the next call).
local function reclaim(leases, lcost, now)
  local ex = redis.call('ZRANGEBYSCORE', leases, '-inf', int(now), 'LIMIT', 0, 256)
  if #ex > 0 then
    redis.call('ZREM', leases, unpack(ex))
    redis.call('HDEL', lcost, unpack(ex))
  end
end

-- Idle keys expire by themselves: a bucket untouched for longer than it takes to refill
-- (and its leases to end) is the same as a fresh one.
-- (PEXPIRE on a missing key does nothing, so no EXISTS first.)
local function keep(ttl_ms)
  local ttl = int(ttl_ms)
  for k = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
