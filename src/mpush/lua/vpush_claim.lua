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
local state = redis.call('HMGET', KEYS[4], 'epoch', 'base', 'claimed', 'seq')
local epoch, base, claimed, seq = state[1], state[2], state[3], tonumber(state[4] or '0')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[4], 'epoch', epoch)
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local acked, age, empty = 0, 0, false
if ARGV[2] ~= '' and base == ARGV[2] then
  acked = redis.call('LLEN', KEYS[3])
  age = now - tonumber(claimed or now)
  redis.call('DEL', KEYS[3])
  base, empty = false, true
end
local batch = tonumber(ARGV[3])
local msgs = {}
if batch > 0 then
  msgs = redis.call('LRANGE', KEYS[3], 0, -1)
  empty = #msgs == 0
end
if batch > 0 and #msgs == 0 then
  if batch == 1 then
    local msg = redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT')
    msgs = msg and {msg} or {}
  else
    msgs = redis.call('RPOP', KEYS[2], batch) or {}
    if #msgs > 0 then
      redis.call('RPUSH', KEYS[3], unpack(msgs))
    end
  end
  base = false
end
if #msgs > 0 and not base then
  -- ids are consecutive: the batch takes the next #msgs of them
  base = string.format('%.0f', seq + 1)
  redis.call('HSET', KEYS[4], 'seq', string.format('%.0f', seq + #msgs), 'base', base,
    'claimed', string.format('%.0f', now))
elseif empty and #msgs == 0 and state[2] then
  redis.call('HDEL', KEYS[4], 'base', 'claimed')
end
local reply = {1, epoch, tonumber(base or '0'), acked, age, redis.call('LLEN', KEYS[2])}
for i = 1, #msgs do
  reply[6 + i] = msgs[i]
end
return reply
