-- ResetResource: delete every key of one resource's hash tag.
-- KEYS: the resource's decision keys (they route the script to the node that holds the
-- tag; every key matched below shares that tag, so it lives on this node's slot).
-- ARGV[1]: the SCAN MATCH pattern of the tag's keys.
-- Returns the number of keys deleted. An admin operation: it scans this node's keyspace.
local cursor = '0'
local n = 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    n = n + redis.call('DEL', k)
  end
until cursor == '0'
return n
