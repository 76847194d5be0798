-- move_tracked.lua: move.lua with message tracking, in the same atomic step (tracking.lua first).
--
-- KEYS[1]     the input list
-- KEYS[2]     <ns>:message:id    counter of message ids
-- KEYS[3]     <ns>:message:ids   ids in flight, newest first
-- KEYS[4]     <ns>:message:due   id → deadline (ms)
-- KEYS[5..n]  the output lists; each gets every message, in the input's order
-- ARGV[1]     batch: most messages to move (at most 5000)
-- ARGV[2]     capacity: trim each output to its newest N messages, 0 for no trim
-- ARGV[3]     expire: EXPIRE each output list this many seconds, 0 for none
-- ARGV[4]     <ns>:message: — the prefix of message and xid keys
-- ARGV[5]     service name, recorded with each message
-- ARGV[6]     message_timeout, milliseconds
-- ARGV[7]     message_expire, seconds
-- ARGV[8]     message_capacity: most ids in flight; messages over it move untracked
-- ARGV[9]     max_deliveries, 0 for retry off (then body and outs are not kept)
-- ARGV[10]    retry backoff, seconds
-- ARGV[11]    retry backoff cap, seconds
-- ARGV[12]    the output lists as a JSON array (kept with each message for redelivery)
--
-- Returns {moved, trimmed, tracked, over_capacity, duplicates}: a message whose xid belongs to
-- a message still in flight moves untracked and counts as a duplicate.
local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then
  return {0, 0, 0, 0, 0}
end
local capacity = tonumber(ARGV[2])
local expire = tonumber(ARGV[3])
local trimmed = 0
for i = 5, #KEYS do
  local length = redis.call('LPUSH', KEYS[i], unpack(msgs))
  if capacity > 0 and length > capacity then
    redis.call('LTRIM', KEYS[i], 0, capacity - 1)
    trimmed = trimmed + length - capacity
  end
  if expire > 0 then
    redis.call('EXPIRE', KEYS[i], expire)
  end
end

local room = tonumber(ARGV[8]) - redis.call('LLEN', KEYS[3])
local n = math.min(#msgs, math.max(room, 0))
if n == 0 then
  return {#msgs, trimmed, 0, #msgs, 0}
end
local prefix, service = ARGV[4], ARGV[5]
local timeout_ms, message_expire = tonumber(ARGV[6]), tonumber(ARGV[7])
local retry = tonumber(ARGV[9]) > 0
local now = now_ms()
local stamp, deadline, timeout = seconds(now), seconds(now + timeout_ms), seconds(timeout_ms)
local deadline_ms = now + timeout_ms
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
local ids, due = {}, {}
local duplicates = 0
for i = 1, n do
  local msg, id = msgs[i], first + i - 1
  local xid, kind = xid_of(msg)
  local xkey = prefix .. 'xid:' .. xid
  local fresh = redis.call('HSETNX', xkey, 'id', id) == 1
  if not fresh and not redis.call('ZSCORE', KEYS[4], redis.call('HGET', xkey, 'id')) then
    redis.call('HSET', xkey, 'id', id) -- the earlier message with this xid is finished
    fresh = true
  end
  if fresh then
    redis.call('HSET', xkey, 'type', kind)
    redis.call('EXPIRE', xkey, message_expire)
    local mkey = prefix .. id
    if retry then
      redis.call('HSET', mkey, 'timestamp', stamp, 'deadline', deadline, 'timeout', timeout,
        'xid', xid, 'service', service, 'deliveries', 1, 'state', 'inflight',
        'max_deliveries', ARGV[9], 'backoff', ARGV[10], 'backoff_max', ARGV[11],
        'outs', ARGV[12], 'body', msg)
    else
      redis.call('HSET', mkey, 'timestamp', stamp, 'deadline', deadline, 'timeout', timeout,
        'xid', xid, 'service', service, 'deliveries', 1, 'state', 'inflight')
    end
    redis.call('EXPIRE', mkey, message_expire)
    ids[#ids + 1] = id
    due[#due + 1] = deadline_ms
    due[#due + 1] = id
  else
    duplicates = duplicates + 1
  end
end
if #ids > 0 then
  redis.call('LPUSH', KEYS[3], unpack(ids))
  for i = 1, #due, 2000 do -- ZADD in slices: unpack has a stack limit
    redis.call('ZADD', KEYS[4], unpack(due, i, math.min(i + 1999, #due)))
  end
end
return {#msgs, trimmed, #ids, #msgs - n, duplicates}
