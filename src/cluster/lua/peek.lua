-- One bucket's state for GetQuota and Watch, without changing it.
-- KEYS: as acquire.lua. ARGV: slots.
-- Returns {now, cooldown remaining, in flight, granted, 429s, then per slot: dim, a, p,
-- burst, available, learned(0|1), period_us}.
local now = now_us()
local home, leases, lcost, learned = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local slots = read_slots(ARGV, 1, learned, home)
local cd = tonumber(redis.call('HGET', home, 'cd') or '0') or 0
local inflight = redis.call('ZCOUNT', leases, '(' .. int(now), '+inf')
local out = {now, math.max(cd - now, 0), inflight,
  tonumber(redis.call('HGET', home, 'g') or '0') or 0,
  tonumber(redis.call('HGET', home, 'u429') or '0') or 0}
for _, s in ipairs(slots) do
  local ahead = ahead_of(s.key, s.name, s.a, now)
  out[#out + 1] = s.dim
  out[#out + 1] = s.b
  out[#out + 1] = available(s, ahead)
  out[#out + 1] = s.learned and 1 or 0
  out[#out + 1] = s.period or 0
end
return out
