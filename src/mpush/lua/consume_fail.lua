-- consume_fail.lua: a consumer failed to handle a message (tracking.lua first).
--
-- KEYS[1]  the consumer's in-flight list
-- KEYS[2]  <ns>:message:due       (with a namespace; else any key of the queue's slot, unused)
-- KEYS[3]  <ns>:message:dead      (with a namespace) or the queue's failed list (without)
-- ARGV[1]  the message
-- ARGV[2]  <ns>:message: — or '' without a namespace
-- ARGV[3]  the error, one line
-- ARGV[4]  the queue's name, for the dead letter
--
-- A tracked message still unfinished gets a hash of its own (if it had none) with the error and
-- is made due at once: the monitor redelivers it (deliveries and backoff permitting) or
-- dead-letters it — the same path a timeout takes. An untracked message is dead-lettered here
-- (JSON, reason "failed: …"); without a namespace it is pushed, as it is, to the failed list.
-- Returns 'retry', 'dead' or 'failed'.
redis.call('LREM', KEYS[1], -1, ARGV[1])
local prefix, body, err = ARGV[2], ARGV[1], ARGV[3]
if prefix == '' then
  redis.call('LPUSH', KEYS[3], body)
  return 'failed'
end
local xid = xid_of(body)
local m = resolve(prefix, xid)
if m then
  local mkey = prefix .. m.id
  if m.own then
    redis.call('HSETNX', mkey, 'body', body)
  else
    own(prefix, m, body)
  end
  if redis.call('HGET', mkey, 'state') == 'inflight' then
    redis.call('HSET', mkey, 'error', err)
    redis.call('ZADD', KEYS[2], 0, m.id)
  end -- else it is already waiting to be redelivered
  return 'retry'
end
redis.call('LPUSH', KEYS[3], cjson.encode({xid = xid, reason = 'failed: ' .. err,
  body = body, queue = ARGV[4]}))
return 'dead'
