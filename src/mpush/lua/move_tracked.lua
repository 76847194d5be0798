-- move_tracked.lua: move.lua with message tracking, in the same atomic step (tracking.lua first).
--
-- KEYS[1]     the input list
-- KEYS[2]     <ns>:message:id       counter of message ids
-- KEYS[3]     <ns>:message:xids     xid → id of every unfinished tracked message
-- KEYS[4]     <ns>:message:batches  first id of every live batch registration
-- KEYS[5]     <ns>:message:due      batch:<first> → its deadline (ms)
-- KEYS[6..n]  the output lists; each gets every message, in the input's order
-- ARGV[1]     batch: most messages to move (at most 5000)
-- ARGV[2]     capacity: trim each output to its newest N messages, 0 for no trim
-- ARGV[3]     expire: EXPIRE each output list this many seconds, 0 for none
-- ARGV[4]     <ns>:message:
-- ARGV[5]     service name, recorded with the messages
-- ARGV[6]     message_timeout, milliseconds
-- ARGV[7]     message_expire, seconds
-- ARGV[8]     message_capacity: most unfinished tracked messages (HLEN of xids); more move
--             untracked
-- ARGV[9]     max_deliveries, 0 for retry off (then bodies and outputs are not kept)
-- ARGV[10]    retry backoff, seconds
-- ARGV[11]    retry backoff cap, seconds
-- ARGV[12]    the output lists as a JSON array (kept for redelivery)
--
-- The messages tracked get the ids first … first+n-1 in input order and one registration hash
-- <ns>:message:batch:<first> for all of them; each gets its xid mapping. Per message that is one
-- hash field (and the xid's SHA-1): tracking stays cheap. Messages with the same xid in flight
-- at once are tracked as one, the latest.
-- Returns {moved, trimmed, tracked, over_capacity}.
--!include push

local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then
  return {0, 0, 0, 0}
end
local moved = #msgs
local trimmed = push_to_outputs(6, msgs, tonumber(ARGV[2]), tonumber(ARGV[3]))

local n = math.min(moved, math.max(tonumber(ARGV[8]) - redis.call('HLEN', KEYS[3]), 0))
if n == 0 then
  return {moved, trimmed, 0, moved}
end
local prefix = ARGV[4]
local timeout_ms = tonumber(ARGV[6])
local now = now_ms()
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
local xids, pairs_ = {}, {}
for i = 1, n do
  local xid = xid_of(msgs[i])
  xids[i] = xid
  pairs_[2 * i - 1] = xid
  pairs_[2 * i] = first + i - 1
end
for i = 1, #pairs_, 4000 do -- in slices: unpack has a stack limit
  redis.call('HSET', KEYS[3], unpack(pairs_, i, math.min(i + 3999, #pairs_)))
end
local bkey = prefix .. 'batch:' .. first
redis.call('HSET', bkey, 'count', n, 'pending', n, 'timestamp', seconds(now),
  'deadline', seconds(now + timeout_ms), 'timeout', seconds(timeout_ms), 'expire', ARGV[7],
  'service', ARGV[5], 'xids', cjson.encode(xids))
if tonumber(ARGV[9]) > 0 then
  if n < moved then
    msgs = {unpack(msgs, 1, n)}
  end
  redis.call('HSET', bkey, 'max_deliveries', ARGV[9], 'backoff', ARGV[10],
    'backoff_max', ARGV[11], 'outs', ARGV[12], 'bodies', cmsgpack.pack(msgs))
end
redis.call('ZADD', KEYS[4], first, first)
redis.call('ZADD', KEYS[5], now + timeout_ms, 'batch:' .. first)
return {moved, trimmed, n, moved - n}
