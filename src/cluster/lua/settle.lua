-- Release a lease and settle its cost, or charge a call made without a permit.
-- KEYS: as acquire.lua. ARGV: slots, mode ("keep" | "refund" | "actual" | "charge"),
-- member, ndims, amount per dimension (-1 = as acquired), ttl_ms, channel, event.
-- Returns 1, or 0 when the lease is unknown, released or expired (nothing changes then).
local now = now_us()
local home, leases, lcost, learned = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local slots, i = read_slots(ARGV, 1, learned, home)
local mode, member = ARGV[i], ARGV[i + 1]
local ndims = tonumber(ARGV[i + 2]); i = i + 3
local amount = {}
for d = 0, ndims - 1 do amount[d] = tonumber(ARGV[i]); i = i + 1 end
local ttl, chan, ev = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]

local taken = {}
if mode ~= 'charge' then
  local exp = redis.call('ZSCORE', leases, member)
  if not exp then return 0 end
  local csv = redis.call('HGET', lcost, member) or ''
  redis.call('ZREM', leases, member)
  redis.call('HDEL', lcost, member)
  -- An ended lease is gone whether or not it was reclaimed yet: its cost stays taken.
  if tonumber(exp) <= now then return 0 end
  local d = 0
  for c in string.gmatch(csv, '[^,]+') do taken[d] = tonumber(c); d = d + 1 end
end
if mode ~= 'keep' then
  for _, s in ipairs(slots) do
    local back = 0
    local charge = 0
    if mode == 'refund' then
      back = taken[s.dim] or 0
    elseif mode == 'actual' then
      if (amount[s.dim] or -1) >= 0 then
        back = taken[s.dim] or 0
        charge = amount[s.dim]
      end
    else
      charge = math.max(amount[s.dim] or 0, 0)
    end
    if back > 0 or charge > 0 then
      local ahead = ahead_of(s.key, s.name, s.a, now) - back * s.p + charge * s.p
      -- Debt is capped at one burst, as in the embedded engine.
      ahead = math.min(math.max(ahead, 0), 2 * s.b * s.p)
      put_ahead(s.key, s.name, ahead, now)
    end
  end
end
keep(ttl)
if chan ~= '' then redis.call('PUBLISH', chan, ev) end
return 1
