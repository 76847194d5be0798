-- consume_beat.lua: a consumer's heartbeat (renews its lease) and the consumers to recover.
--
-- KEYS[1]  the queue's consumer set: consumer id → lease end (ms, Redis TIME)
-- ARGV[1]  this consumer's id
-- ARGV[2]  lease, milliseconds
-- ARGV[3]  most expired consumers to return
--
-- Returns the ids of consumers whose lease has ended (never this one).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[3])
