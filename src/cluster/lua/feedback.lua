-- What an upstream said, applied to the home bucket: cooldown, 429 count, learned limits,
-- blocked dimensions and downward corrections. Delays are relative (this replica's clock
-- never enters Redis state).
-- KEYS: as acquire.lua. ARGV: slots, cooldown_us (0 none), is_429 (0|1), nlearn, then
-- dim, period_us, "a,p,burst" each; nblock, then dim, for_us each; ncorr, then dim,
-- window_us (0 = every window), remaining each; ttl_ms, channel, event.
-- Returns {cooldown remaining us, learned slots changed}.
local now = now_us()
local home, learned = KEYS[1], KEYS[5]
local i = 1
local cool = tonumber(ARGV[i]); local is429 = tonumber(ARGV[i + 1]); i = i + 2
local changed = 0
local nlearn = tonumber(ARGV[i]); i = i + 1
for _ = 1, nlearn do
  local field = ARGV[i] .. ':' .. ARGV[i + 1]
  if redis.call('HGET', learned, field) ~= ARGV[i + 2] then
    -- At most 4 windows per dimension: headers are untrusted input.
    local count = 0
    for _, f in ipairs(redis.call('HKEYS', learned)) do
      if string.match(f, '^' .. ARGV[i] .. ':') then count = count + 1 end
    end
    if count < 4 or redis.call('HEXISTS', learned, field) == 1 then
      redis.call('HSET', learned, field, ARGV[i + 2])
      changed = changed + 1
    end
  end
  i = i + 3
end
local slots
slots, i = read_slots(ARGV, i, learned, home)
local nblock = tonumber(ARGV[i]); i = i + 1
for _ = 1, nblock do
  local f = 'bk' .. ARGV[i]
  local until_ = now + tonumber(ARGV[i + 1])
  local cur = tonumber(redis.call('HGET', home, f) or '0') or 0
  if until_ > cur then redis.call('HSET', home, f, int(until_)) end
  i = i + 2
end
local ncorr = tonumber(ARGV[i]); i = i + 1
for _ = 1, ncorr do
  local dim, window, rem = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  for _, s in ipairs(slots) do
    if s.dim == dim and (window == 0 or s.period == window) then
      local ahead = ahead_of(s.key, s.name, s.a, now)
      if available(s, ahead) > rem then
        put_ahead(s.key, s.name, (s.b - rem) * s.p, now)
      end
    end
  end
  i = i + 3
end
if cool > 0 then
  local cur = tonumber(redis.call('HGET', home, 'cd') or '0') or 0
  if now + cool > cur then redis.call('HSET', home, 'cd', int(now + cool)) end
end
if is429 == 1 then redis.call('HINCRBY', home, 'u429', 1) end
local ttl, chan, ev = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
keep(ttl)
if chan ~= '' then redis.call('PUBLISH', chan, ev) end
local cd = tonumber(redis.call('HGET', home, 'cd') or '0') or 0
return {math.max(cd - now, 0), changed}
