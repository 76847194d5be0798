-- consume_recover.lua: give back what a consumer holds (tracking.lua first).
--
-- KEYS[1]  the queue's consumer set
-- KEYS[2]  that consumer's in-flight list
-- KEYS[3]  the queue
-- KEYS[4]  <ns>:message:due   (with a namespace; else any key of the queue's slot, unused)
-- ARGV[1]  that consumer's id
-- ARGV[2]  <ns>:message: — or '' without a namespace
-- ARGV[3]  'lost' (its lease ended: only if it still has) or 'release' (it stops cleanly)
--
-- A lost consumer's tracked messages with retry on take the retry path (a failure "consumer
-- <id> lost": redelivered while deliveries are left, then dead-lettered), so a message that kills
-- every consumer ends on the dead-letter list instead of going round for ever. Every other
-- message goes back to the queue's consuming end, oldest first. Returns {requeued, retried}, or
-- {-1, -1} when there was nothing to do (it renewed its lease, or was recovered already).
local prefix = ARGV[2]
if ARGV[3] == 'lost' then
  local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not lease or tonumber(lease) > now then
    return {-1, -1}
  end
end
local held = redis.call('LRANGE', KEYS[2], 0, -1) -- newest first
local requeued, retried = 0, 0
for _, body in ipairs(held) do
  local m = ARGV[3] == 'lost' and prefix ~= '' and resolve(prefix, xid_of(body))
  local retry = m and redis.call('HGET', prefix .. (m.own and m.id or ('batch:' .. m.first)),
    'max_deliveries')
  if retry then
    local mkey = prefix .. m.id
    if not m.own then
      own(prefix, m, body)
    end
    if redis.call('HGET', mkey, 'state') == 'inflight' then
      redis.call('HSET', mkey, 'error', 'consumer ' .. ARGV[1] .. ' lost')
      redis.call('ZADD', KEYS[4], 0, m.id)
    end
    retried = retried + 1
  else
    redis.call('RPUSH', KEYS[3], body)
    requeued = requeued + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return {requeued, retried}
