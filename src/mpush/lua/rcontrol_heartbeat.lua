-- rcontrol_heartbeat.lua: an agent's heartbeat: its host hash, alive for ttl, and its last-seen
-- time (Redis TIME, so hosts with skewed clocks compare fairly).
--
-- KEYS[1]  <ns>:rcontrol:host:<host>   KEYS[2]  <ns>:rcontrol:hosts (zset: host → last seen, ms)
-- ARGV[1]  the host's name   ARGV[2]  ttl in milliseconds
-- ARGV[3…] field, value pairs (capacity, labels, load1, mem_free, …)
--
-- Returns the Redis time in milliseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'seen', string.format('%.0f', now), unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return now
