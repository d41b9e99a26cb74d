-- Check every limit, the cooldown, blocked dimensions and the concurrency slots of one
-- permit, and take it all or nothing.
-- KEYS: 1 home hash, 2 home leases (zset member -> expiry), 3 lease costs (member -> csv),
--       4 resource-wide hash (= KEYS[1] when there is none), 5 learned limits of home,
--       6 the resource's live partitions (zset home key -> expiry).
-- ARGV: slots (see read_slots), ndims, cost per dimension, concurrency (0 = none),
--       lease_us, member, ttl_ms, channel, event, partition cap (0 = not partitioned).
-- Returns {code, wait_us or expiry_us, now_us, remaining per slot as dim,avail pairs...}:
-- code 0 granted (2nd = lease expiry), 1 rate, 2 concurrency, 3 cooldown, 4 never,
-- 5 partition cap reached (2nd = live partitions; nothing was written).
local now = now_us()
local home, leases, lcost, learned = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local slots, i = read_slots(ARGV, 1, learned, home)
local ndims = tonumber(ARGV[i]); i = i + 1
local cost = {}
for d = 0, ndims - 1 do cost[d] = tonumber(ARGV[i]); i = i + 1 end
local conc, lease, member = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2]
local ttl, chan, ev = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
local cap = tonumber(ARGV[i + 6]) or 0

-- A new partition is refused past the cap (expired ones are dropped first); a live one
-- has its expiry moved on. Before anything else, so a refusal writes nothing.
if cap > 0 then
  local parts = KEYS[6]
  if not redis.call('ZSCORE', parts, home) then
    redis.call('ZREMRANGEBYSCORE', parts, '-inf', int(now))
    local live = redis.call('ZCARD', parts)
    if live >= cap then return {5, live, now} end
  end
  redis.call('ZADD', parts, int(now + ttl * 1000), home)
end

local function answer(code, second, aheads)
  local out = {code, second, now}
  for k, s in ipairs(slots) do
    out[#out + 1] = s.dim
    out[#out + 1] = available(s, aheads[k] or 0)
  end
  return out
end

local aheads = {}
for k, s in ipairs(slots) do aheads[k] = ahead_of(s.key, s.name, s.a, now) end

local cd = tonumber(redis.call('HGET', home, 'cd') or '0') or 0
if cd > now then return answer(3, cd - now, aheads) end

local wait = 0
for d = 0, ndims - 1 do
  if (cost[d] or 0) > 0 then
    local bk = tonumber(redis.call('HGET', home, 'bk' .. d) or '0') or 0
    if bk > now and bk - now > wait then wait = bk - now end
  end
end
for k, s in ipairs(slots) do
  local c = cost[s.dim] or 0
  if c > s.b then return answer(4, 0, aheads) end
  local w = wait_for(s, aheads[k], c)
  if w > wait then wait = w end
end

if conc > 0 then
  reclaim(leases, lcost, now)
  if redis.call('ZCARD', leases) >= conc then
    local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
    local w = math.max(tonumber(first[2] or now) - now, wait)
    return answer(2, w, aheads)
  end
end
if wait > 0 then return answer(1, wait, aheads) end

local costs = {}
for d = 0, ndims - 1 do costs[#costs + 1] = int(cost[d]) end
for k, s in ipairs(slots) do
  local c = cost[s.dim] or 0
  if c > 0 then
    aheads[k] = taken(s, aheads[k], c)
    put_ahead(s.key, s.name, aheads[k], now)
  end
end
redis.call('ZADD', leases, int(now + lease), member)
redis.call('HSET', lcost, member, table.concat(costs, ','))
redis.call('HINCRBY', home, 'g', 1)
keep(ttl)
if chan ~= '' then redis.call('PUBLISH', chan, ev) end
return answer(0, now + lease, aheads)
