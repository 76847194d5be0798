-- throttle.lua: move up to ARGV[1] messages from one list to another, as many as a token bucket
-- shared by every replica allows; atomically.
--
-- KEYS[1]     the input list (producers LPUSH, we take from the right: oldest first)
-- KEYS[2]     the output list
-- KEYS[3]     the token bucket: a hash {tokens, ts} (ts in ms of Redis TIME); missing = full
-- ARGV[1]     batch: most messages to move in this call (at most 5000: unpack's stack limit)
-- ARGV[2]     rate: tokens added per millisecond
-- ARGV[3]     burst: the bucket's capacity (at least 1)
--
-- The clock is Redis TIME, so replicas on different hosts share one clock. Each message moved
-- spends one token; the bucket refills continuously at `rate` up to `burst`. It expires once it
-- would be full again, so an idle bucket costs nothing.
--
-- Returns {moved, wait}: messages moved; and, when messages wait on the input for tokens, the
-- milliseconds until the next token is due (0 when the input is drained or tokens remain).
-- The messages never leave Redis, so a client killed at any instant loses and duplicates nothing.
local batch, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local state = redis.call('HMGET', KEYS[3], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = burst, now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end

local moved = 0
local take = math.min(batch, math.floor(tokens))
if take > 0 then
  local msgs = redis.call('RPOP', KEYS[1], take)
  if msgs then
    moved = #msgs
    -- RPOP gave oldest first; LPUSH of that sequence leaves the oldest nearest the tail.
    redis.call('LPUSH', KEYS[2], unpack(msgs))
    tokens = tokens - moved
  end
end
if moved > 0 or now > ts then
  redis.call('HSET', KEYS[3], 'tokens', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[3], math.ceil((burst - tokens) / rate) + 1000)
end

local wait = 0
if tokens < 1 and redis.call('LLEN', KEYS[1]) > 0 then
  wait = math.ceil((1 - tokens) / rate)
end
return {moved, wait}
