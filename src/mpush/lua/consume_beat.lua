-- consume_beat.lua: a consumer's heartbeat: renews its lease (one for everything it holds), and
-- names the consumers to recover.
--
-- KEYS[1]  the queue's consumer set: consumer id → lease end (ms, Redis TIME)
-- KEYS[2]  this consumer's in-flight list
-- ARGV[1]  this consumer's id
-- ARGV[2]  lease, milliseconds
-- ARGV[3]  most expired consumers to return
--
-- Returns {length of the in-flight list, {ids of consumers whose lease has ended (never this
-- one)}}. The length lets the consumer notice messages it holds without knowing (a claim whose
-- reply was lost).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {redis.call('LLEN', KEYS[2]),
  redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[3])}
