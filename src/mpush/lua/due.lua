-- due.lua: handle the tracked messages whose time has come (tracking.lua first).
--
-- KEYS[1]  <ns>:message:due        batch:<first> or <id> → when to look at it next (ms)
-- KEYS[2]  <ns>:message:xids
-- KEYS[3]  <ns>:message:batches
-- KEYS[4]  <ns>:message:dead       dead letters (JSON)
-- KEYS[5]  <ns>:metrics:timeout    count of deliveries past their deadline; `expired` counts
--                                  messages delisted unfinished at message_expire (retry off)
-- KEYS[6]  <ns>:metrics:failed     count of failures reported by consumers
-- KEYS[7]  <ns>:metrics:retry      count of redeliveries
-- KEYS[8]  <ns>:metrics:dead       count of dead letters; fields timeout, failed
-- ARGV[1]  batch: most entries to handle
-- ARGV[2]  <ns>:message:
--
-- A batch registration at its deadline: with retry off its unfinished messages are counted as
-- timeouts and the batch is looked at again shortly before message_expire, when what is still
-- unfinished is delisted; with retry on each unfinished message gets a hash of its own and is
-- handled as below, at once.
-- A message with its own hash, by state:
--   inflight, deadline passed (or a failure reported) → with deliveries left: state retry, due
--            again after backoff·2^(deliveries-1) capped at backoff_max; else a dead letter
--   retry    → pushed again to every output, deliveries + 1, a new deadline
--   late     → delisted unfinished
-- Entries are claimed inside the script, so several monitors never handle a message twice.
-- Returns {handled, milliseconds until the next entry is due, or -1 when none is}.
local prefix = ARGV[2]
local now = now_ms()
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local counts = {timeout = 0, failed = 0, retry = 0, dead = 0, expired = 0}
local dead_by = {timeout = 0, failed = 0}

local function batch_due(member)
  local first = string.sub(member, 7)
  local bkey = prefix .. 'batch:' .. first
  local b = batch_fields(prefix, first)
  local packed = redis.call('HMGET', bkey, 'xids', 'state', 'bodies')
  if not packed[1] then
    redis.call('ZREM', KEYS[1], member)
    return
  end
  local xids, late = cjson.decode(packed[1]), packed[2] == 'late'
  local bodies = packed[3] and cmsgpack.unpack(packed[3])
  local left = 0
  for k, xid in ipairs(xids) do
    local id = string.format('%d', tonumber(first) + k - 1)
    if redis.call('HGET', KEYS[2], xid) == id and redis.call('EXISTS', prefix .. id) == 0 then
      if late then
        redis.call('HDEL', KEYS[2], xid)
        counts.expired = counts.expired + 1
      elseif b.max_deliveries then
        own(prefix, {id = id, xid = xid, first = first}, bodies and bodies[k], b)
        redis.call('ZADD', KEYS[1], now, id)
      else
        counts.timeout = counts.timeout + 1
        left = left + 1
      end
    end
  end
  if left > 0 then
    local expiry = math.floor(1000 * ((tonumber(b.timestamp) or 0) + (tonumber(b.expire) or 0)))
    expiry = expiry - 1000
    redis.call('HSET', bkey, 'state', 'late')
    redis.call('ZADD', KEYS[1], math.max(expiry, now), member)
  else
    redis.call('DEL', bkey)
    redis.call('ZREM', KEYS[3], first)
    redis.call('ZREM', KEYS[1], member)
  end
end

local function bury(m, fields, kind, reason)
  dead_letter(prefix, m.id, fields, reason)
  finish(prefix, m, 'dead')
  counts.dead = counts.dead + 1
  dead_by[kind] = dead_by[kind] + 1
end

local function redeliver(m, fields)
  local ok, outs = pcall(cjson.decode, fields.outs or '')
  if not ok or type(outs) ~= 'table' or not fields.body then
    bury(m, fields, 'failed', 'cannot redeliver: body or outputs missing')
    return
  end
  for _, out in ipairs(outs) do
    local pushed = redis.pcall('LPUSH', out, fields.body)
    if type(pushed) == 'table' and pushed.err then
      bury(m, fields, 'failed', 'cannot redeliver to ' .. out .. ': ' .. pushed.err)
      return
    end
  end
  local timeout_ms = math.floor((tonumber(fields.timeout) or 10) * 1000)
  local mkey = prefix .. m.id
  redis.call('HINCRBY', mkey, 'deliveries', 1)
  redis.call('HSET', mkey, 'state', 'inflight', 'deadline', seconds(now + timeout_ms))
  redis.call('ZADD', KEYS[1], now + timeout_ms, m.id)
  counts.retry = counts.retry + 1
end

local function message_due(id)
  local mkey = prefix .. id
  local flat = redis.call('HGETALL', mkey)
  local fields = {}
  for i = 1, #flat, 2 do
    fields[flat[i]] = flat[i + 1]
  end
  local state = fields.state
  local m = {id = id, xid = fields.xid or '', own = true}
  if state == 'retry' then
    redeliver(m, fields)
  elseif state == 'inflight' then
    local reason, kind = 'timeout', 'timeout'
    if fields.error then
      reason, kind = 'failed: ' .. fields.error, 'failed'
    end
    counts[kind] = counts[kind] + 1
    local max = tonumber(fields.max_deliveries) or 0
    local deliveries = tonumber(fields.deliveries) or 1
    if max > 0 and deliveries < max then
      local delay = (tonumber(fields.backoff) or 0) * 2 ^ (deliveries - 1)
      delay = math.floor(1000 * math.min(delay, tonumber(fields.backoff_max) or 0))
      redis.call('HSET', mkey, 'state', 'retry', 'last_error', reason)
      redis.call('HDEL', mkey, 'error')
      redis.call('ZADD', KEYS[1], now + delay, id)
    elseif max > 0 or fields.error then
      bury(m, fields, kind, reason)
    else -- retry off: counted; kept until done or message_expire
      local stamp, expire = tonumber(fields.timestamp) or 0, tonumber(fields.expire) or 0
      local expiry = math.floor(1000 * (stamp + expire))
      redis.call('HSET', mkey, 'state', 'late')
      redis.call('ZADD', KEYS[1], math.max(expiry - 1000, now), id)
    end
  elseif state == 'late' then
    finish(prefix, m, 'expired')
    counts.expired = counts.expired + 1
  else -- finished, or its hash is gone: nothing left to do
    redis.call('ZREM', KEYS[1], id)
  end
end

for _, member in ipairs(entries) do
  if string.sub(member, 1, 6) == 'batch:' then
    batch_due(member)
  else
    message_due(member)
  end
end

bump(KEYS[5], 'count', counts.timeout)
bump(KEYS[5], 'expired', counts.expired)
bump(KEYS[6], 'count', counts.failed)
bump(KEYS[7], 'count', counts.retry)
bump(KEYS[8], 'count', counts.dead)
for kind, n in pairs(dead_by) do
  bump(KEYS[8], kind, n)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #next_due > 0 then
  wait = math.max(tonumber(next_due[2]) - now, 0)
end
return {#entries, wait}
