-- consume_ack.lua: a consumer finished a message (tracking.lua first).
--
-- KEYS[1]  the consumer's in-flight list
-- KEYS[2]  <ns>:message:done   (with a namespace; else any key of the queue's slot, unused)
-- KEYS[3]  <ns>:message:xids   (likewise)
-- ARGV[1]  the message
-- ARGV[2]  '1' when the queue is tracked (a namespace was given), else '0'
--
-- Takes the message off the in-flight list and, when it is a tracked message still unfinished,
-- pushes its xid to the done list for the monitor. Returns {removed, reported}.
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
local reported = 0
if ARGV[2] == '1' then
  local xid = xid_of(ARGV[1])
  if redis.call('HEXISTS', KEYS[3], xid) == 1 then
    redis.call('LPUSH', KEYS[2], xid)
    reported = 1
  end
end
return {removed, reported}
