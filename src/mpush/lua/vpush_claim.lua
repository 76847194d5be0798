-- vpush_claim.lua (source side): acknowledge the batch the destination confirmed, then hand out
-- the batch to deliver next — the one still in flight if there is one, else a fresh claim.
--
-- KEYS[1]  the lease: "<token> <owner>"; nothing happens unless ARGV[1] holds it
-- KEYS[2]  the input list (producers LPUSH, we take from the right: oldest first)
-- KEYS[3]  the in-flight list: the claimed batch, oldest first
-- KEYS[4]  the route state hash: epoch, seq (last id handed out), base (first id of the
--          in-flight batch), claimed (ms time of that claim)
-- ARGV[1]  our fencing token
-- ARGV[2]  base id of the batch the destination confirmed, or '' for none
-- ARGV[3]  batch: most messages to claim (0: acknowledge only)
-- ARGV[4]  an epoch to adopt if the route has none yet
--
-- Returns {0} when the lease is not ours: nothing was changed. Else
-- {1, epoch, base, acked, acked_age_ms, lag, msg1, msg2, ...}: the messages to deliver (none
-- when drained) with the id of the first (the others follow by one), how many messages were
-- acknowledged and how long they were in flight, and the input's length after the claim.
-- Calling it again after a lost reply is safe: the same in-flight batch comes back.
local holder = redis.call('GET', KEYS[1])
if not holder or string.match(holder, '^%d+') ~= ARGV[1] then
  return {0}
end
local epoch = redis.call('HGET', KEYS[4], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[4], 'epoch', epoch)
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local acked, age = 0, 0
if ARGV[2] ~= '' and redis.call('HGET', KEYS[4], 'base') == ARGV[2] then
  acked = redis.call('LLEN', KEYS[3])
  age = now - tonumber(redis.call('HGET', KEYS[4], 'claimed') or now)
  redis.call('DEL', KEYS[3])
  redis.call('HDEL', KEYS[4], 'base', 'claimed')
end
local batch = tonumber(ARGV[3])
if batch == 0 then
  return {1, epoch, 0, acked, age, redis.call('LLEN', KEYS[2])}
end
local msgs = redis.call('LRANGE', KEYS[3], 0, -1)
local base = redis.call('HGET', KEYS[4], 'base')
if #msgs == 0 then
  msgs = redis.call('RPOP', KEYS[2], batch)
  if not msgs then
    return {1, epoch, 0, acked, age, 0}
  end
  redis.call('RPUSH', KEYS[3], unpack(msgs))
  base = nil
end
if not base then
  -- ids are consecutive: the batch takes the next #msgs of them
  base = redis.call('HINCRBY', KEYS[4], 'seq', #msgs) - #msgs + 1
  base = string.format('%.0f', base)
  redis.call('HSET', KEYS[4], 'base', base, 'claimed', string.format('%.0f', now))
end
local reply = {1, epoch, tonumber(base), acked, age, redis.call('LLEN', KEYS[2])}
for i = 1, #msgs do
  reply[6 + i] = msgs[i]
end
return reply
