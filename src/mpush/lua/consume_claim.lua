-- consume_claim.lua: a consumer's step (tracking.lua first): acknowledge the messages it has
-- finished, then claim up to N more — one atomic step, one round trip.
--
-- KEYS[1]  the consumer's in-flight list (claims are LPUSHed: its tail holds the oldest)
-- KEYS[2]  the queue (producers LPUSH; we take from the right: oldest first)
-- KEYS[3]  <ns>:message:done   (with a namespace; else any key of the queue's slot, unused)
-- KEYS[4]  <ns>:message:xids   (likewise)
-- ARGV[1]  '1' when the queue is tracked (a namespace was given), else '0'
-- ARGV[2]  most messages to claim (0: acknowledge only; at most 5000, unpack's stack limit)
-- ARGV[3…] the finished messages (at most 5000)
--
-- Each finished message is taken off the in-flight list (one occurrence, searched from the
-- oldest end) and, when it is a tracked message still unfinished, its xid pushed to the done
-- list for the monitor. Then up to ARGV[2] messages move from the queue to the in-flight list,
-- so a claimed message is never only in the consumer's memory. Returns the claimed messages,
-- oldest first (an empty array when the queue is empty).
local xids = {}
for i = 3, #ARGV do
  redis.call('LREM', KEYS[1], -1, ARGV[i])
  if ARGV[1] == '1' then
    local xid = xid_of(ARGV[i])
    if redis.call('HEXISTS', KEYS[4], xid) == 1 then
      xids[#xids + 1] = xid
    end
  end
end
if #xids > 0 then
  redis.call('LPUSH', KEYS[3], unpack(xids))
end
local count = tonumber(ARGV[2])
if count < 1 then
  return {}
end
local claimed = redis.call('RPOP', KEYS[2], count)
if not claimed then
  return {}
end
redis.call('LPUSH', KEYS[1], unpack(claimed))
return claimed
