-- due.lua: handle the tracked messages whose time has come (tracking.lua first).
--
-- KEYS[1]  <ns>:message:due        id → when to look at it next (ms)
-- KEYS[2]  <ns>:message:ids
-- KEYS[3]  <ns>:message:dead       dead letters (JSON)
-- KEYS[4]  <ns>:metrics:timeout    count of deliveries past their deadline; `expired` counts
--                                  messages delisted unfinished (retry off) at their expiry
-- KEYS[5]  <ns>:metrics:failed     count of failures reported by consumers
-- KEYS[6]  <ns>:metrics:retry      count of redeliveries
-- KEYS[7]  <ns>:metrics:dead       count of dead letters; fields timeout, failed, expired
-- ARGV[1]  batch: most messages to handle
-- ARGV[2]  <ns>:message:
--
-- Per message, by its state:
--   inflight, deadline passed (or a failure reported) → with retry on and deliveries left:
--            state retry, due again after backoff·2^(deliveries-1) capped at backoff_max;
--            with retry on and none left (or a failure with retry off): dead letter;
--            with retry off: state late, counted, kept until done or shortly before it expires
--   retry    → pushed again to every output, deliveries + 1, a new deadline
--   late     → delisted unfinished
--   hash gone (expired while nobody looked) → a dead letter with reason `expired`
-- The batch is claimed inside the script, so several monitors never handle a message twice.
-- Returns {handled, milliseconds until the next message is due, or -1 when none is}.
local prefix = ARGV[2]
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local counts = {timeout = 0, failed = 0, retry = 0, dead = 0, expired = 0}
local dead_by = {timeout = 0, failed = 0, expired = 0}

local function bury(id, fields, kind, reason)
  dead_letter(KEYS[3], id, fields, reason)
  finish(prefix, KEYS[1], KEYS[2], id, 'dead', fields and fields.xid)
  counts.dead = counts.dead + 1
  dead_by[kind] = dead_by[kind] + 1
end

local function redeliver(id, fields)
  local ok, outs = pcall(cjson.decode, fields.outs or '')
  if not ok or type(outs) ~= 'table' or not fields.body then
    bury(id, fields, 'failed', 'cannot redeliver: body or outputs missing')
    return
  end
  for _, out in ipairs(outs) do
    local pushed = redis.pcall('LPUSH', out, fields.body)
    if type(pushed) == 'table' and pushed.err then
      bury(id, fields, 'failed', 'cannot redeliver to ' .. out .. ': ' .. pushed.err)
      return
    end
  end
  local timeout_ms = math.floor(tonumber(fields.timeout) * 1000)
  redis.call('HINCRBY', prefix .. id, 'deliveries', 1)
  redis.call('HSET', prefix .. id, 'state', 'inflight', 'deadline', seconds(now + timeout_ms))
  redis.call('ZADD', KEYS[1], now + timeout_ms, id)
  counts.retry = counts.retry + 1
end

for _, id in ipairs(ids) do
  local mkey = prefix .. id
  local fields = message_fields(mkey)
  local state = fields and fields.state
  if not fields then
    bury(id, nil, 'expired', 'expired')
  elseif state == 'retry' then
    redeliver(id, fields)
  elseif state == 'inflight' or state == 'late' then
    local reason
    if fields.error then
      reason = 'failed: ' .. fields.error
      counts.failed = counts.failed + 1
    elseif state == 'inflight' then
      reason = 'timeout'
      counts.timeout = counts.timeout + 1
    end
    local max = tonumber(fields.max_deliveries or '0')
    local deliveries = tonumber(fields.deliveries or '1')
    if not reason then
      finish(prefix, KEYS[1], KEYS[2], id, 'expired', fields.xid)
      counts.expired = counts.expired + 1
    elseif max > 0 and deliveries < max then
      local delay = tonumber(fields.backoff or '0') * 2 ^ (deliveries - 1)
      delay = math.floor(1000 * math.min(delay, tonumber(fields.backoff_max or '0')))
      redis.call('HSET', mkey, 'state', 'retry', 'last_error', reason)
      redis.call('HDEL', mkey, 'error')
      redis.call('ZADD', KEYS[1], now + delay, id)
    elseif max > 0 or fields.error then
      bury(id, fields, fields.error and 'failed' or 'timeout', reason)
    else
      local ttl = redis.call('PTTL', mkey)
      redis.call('HSET', mkey, 'state', 'late')
      redis.call('ZADD', KEYS[1], now + math.max(ttl - 1000, 0), id)
    end
  else -- finished but still listed
    finish(prefix, KEYS[1], KEYS[2], id, state, fields.xid)
  end
end

bump(KEYS[4], 'count', counts.timeout)
bump(KEYS[4], 'expired', counts.expired)
bump(KEYS[5], 'count', counts.failed)
bump(KEYS[6], 'count', counts.retry)
bump(KEYS[7], 'count', counts.dead)
for kind, n in pairs(dead_by) do
  bump(KEYS[7], kind, n)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #next_due > 0 then
  wait = math.max(tonumber(next_due[2]) - now, 0)
end
return {#ids, wait}
