-- lease_acquire.lua: take a free lease and hand out the next fencing token, atomically.
--
-- KEYS[1]  the lease: a string "<token> <owner>" with a PX expiry while someone holds it
-- KEYS[2]  the hash holding the fencing-token counter (it outlives every lease)
-- ARGV[1]  owner: who we are, for people reading the lease (host:pid[:instance])
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  the counter's field in KEYS[2]
-- ARGV[4]  floor: the token handed out is at least this (0 for none); a holder fenced by a token
--          it never saw here passes that token + 1 so the counter catches up at once
--
-- Returns {1, token} when acquired, {0, pttl_ms, holder} when someone else holds it.
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, redis.call('PTTL', KEYS[1]), holder}
end
local token = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local floor = tonumber(ARGV[4])
if token < floor then
  token = floor
  redis.call('HSET', KEYS[2], ARGV[3], string.format('%.0f', token))
end
redis.call('SET', KEYS[1], string.format('%.0f', token) .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, token}
