-- tracking.lua: functions shared by the message-tracking scripts; not a script by itself. It is
-- loaded in front of move_tracked.lua, done.lua, due.lua and the consumer scripts.
--
-- Every script takes the prefix <ns>:message: as an argument and finds these keys under it
-- (keys.py documents them; on Cluster they share the namespace's hash tag):
--   id, xids, batches, due, dead    the fixed keys (also passed as KEYS where written)
--   batch:<first>  one atomic move's registration: count, pending, timestamp, deadline, timeout,
--                  expire, service, xids (JSON array); with retry on also max_deliveries,
--                  backoff, backoff_max, outs (JSON array), bodies (msgpack array)
--   <id>           one message with a history of its own (timed out with retry on, failed,
--                  redelivered, dead): timestamp, deadline, timeout, expire, xid, service,
--                  deliveries, state (inflight | retry | late | done | dead | expired),
--                  max_deliveries, backoff, backoff_max, outs, body, error, last_error
-- Registrations and unfinished messages' hashes have no expiry: the monitor removes them, and
-- message_capacity bounds how many there are when no monitor runs.

--!include xid

-- Redis TIME in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Milliseconds as the seconds text stored in the hashes, e.g. 1459103237.125
local function seconds(ms)
  return string.format('%.3f', ms / 1000)
end

-- Add `n` to `field` of a metrics hash (nothing when n is 0).
local function bump(key, field, n)
  if n ~= 0 then
    redis.call('HINCRBY', key, field, n)
  end
end

-- A hash as a table of the fields asked for (missing ones nil).
local function hmget(key, ...)
  local names = {...}
  local values = redis.call('HMGET', key, unpack(names))
  local fields = {}
  for i, name in ipairs(names) do
    if values[i] then
      fields[name] = values[i]
    end
  end
  return fields
end

-- The first id of the batch registration holding message `id`, or nil.
local function batch_of(prefix, id)
  local found = redis.call('ZREVRANGEBYSCORE', prefix .. 'batches', id, '-inf', 'LIMIT', 0, 1)
  if #found == 0 then
    return nil
  end
  local count = tonumber(redis.call('HGET', prefix .. 'batch:' .. found[1], 'count') or '0')
  if tonumber(id) < tonumber(found[1]) + count then
    return found[1]
  end
  return nil
end

-- One message of a batch has left it (finished, or given a hash of its own); the batch
-- registration goes when none is left.
local function leave_batch(prefix, first)
  local bkey = prefix .. 'batch:' .. first
  if redis.call('HINCRBY', bkey, 'pending', -1) <= 0 then
    redis.call('DEL', bkey)
    redis.call('ZREM', prefix .. 'batches', first)
    redis.call('ZREM', prefix .. 'due', 'batch:' .. first)
  end
end

-- The unfinished tracked message `id` with xid `xid`: {id, xid, own (has a hash), first (its
-- batch, when not own)} — or nil when it is finished or unknown.
local function locate(prefix, id, xid)
  if redis.call('HGET', prefix .. 'xids', xid) ~= id then
    return nil
  end
  local state = redis.call('HGET', prefix .. id, 'state')
  if state == 'inflight' or state == 'retry' or state == 'late' then
    return {id = id, xid = xid, own = true}
  elseif state then -- finished
    return nil
  end
  local first = batch_of(prefix, id)
  if first then
    return {id = id, xid = xid, own = false, first = first}
  end
  return nil
end

-- A batch's xids, decoded once per script call (reports by id may name many of one batch).
local decoded_xids = {}

-- The unfinished tracked message a done report or a consumer names: by xid first, then by id.
local function resolve(prefix, report)
  local id = redis.call('HGET', prefix .. 'xids', report)
  if id then
    return locate(prefix, id, report)
  end
  if not string.find(report, '^%d+$') then
    return nil
  end
  local xid = redis.call('HGET', prefix .. report, 'xid')
  if not xid then
    local first = batch_of(prefix, report)
    if not first then
      return nil
    end
    local xids = decoded_xids[first]
    if not xids then
      xids = cjson.decode(redis.call('HGET', prefix .. 'batch:' .. first, 'xids'))
      decoded_xids[first] = xids
    end
    xid = xids[tonumber(report) - tonumber(first) + 1]
  end
  return xid and locate(prefix, report, xid)
end

-- The batch registration fields `own` copies into a message's own hash.
local function batch_fields(prefix, first)
  return hmget(prefix .. 'batch:' .. first, 'timestamp', 'deadline', 'timeout', 'expire',
    'service', 'max_deliveries', 'backoff', 'backoff_max', 'outs')
end

-- Give message `m` (still in batch `m.first`) a hash of its own, with `body` if given, else its
-- body from the batch (kept there when retry is on). `b`: the batch's fields, if already read.
-- The hash has no expiry while the message is unfinished (message_capacity bounds how many
-- there are); `finish` sets it.
local function own(prefix, m, body, b)
  local bkey = prefix .. 'batch:' .. m.first
  b = b or batch_fields(prefix, m.first)
  if not body and b.max_deliveries then
    local bodies = cmsgpack.unpack(redis.call('HGET', bkey, 'bodies'))
    body = bodies[tonumber(m.id) - tonumber(m.first) + 1]
  end
  local mkey = prefix .. m.id
  redis.call('HSET', mkey, 'timestamp', b.timestamp, 'deadline', b.deadline,
    'timeout', b.timeout, 'expire', b.expire, 'xid', m.xid, 'service', b.service,
    'deliveries', 1, 'state', 'inflight')
  if b.max_deliveries then
    redis.call('HSET', mkey, 'max_deliveries', b.max_deliveries, 'backoff', b.backoff,
      'backoff_max', b.backoff_max, 'outs', b.outs)
  end
  if body then
    redis.call('HSET', mkey, 'body', body)
  end
  leave_batch(prefix, m.first)
  m.own, m.first = true, nil
  return mkey
end

-- Stop tracking message `m`: its xid mapping, its place on the due set, and its batch (or, for
-- a message with its own hash: state set, body dropped, EXPIRE set).
local function finish(prefix, m, state)
  if redis.call('HGET', prefix .. 'xids', m.xid) == m.id then
    redis.call('HDEL', prefix .. 'xids', m.xid)
  end
  if m.own then
    local mkey = prefix .. m.id
    redis.call('ZREM', prefix .. 'due', m.id)
    redis.call('HSET', mkey, 'state', state)
    redis.call('HDEL', mkey, 'body', 'outs', 'error')
    local expire = redis.call('HGET', mkey, 'expire')
    if expire then
      redis.call('EXPIRE', mkey, expire) -- kept a while for inspection
    end
  else
    leave_batch(prefix, m.first)
  end
end

-- A dead letter: JSON with the message's id, xid, deliveries, reason, service, timestamp, outs
-- and body (the body's bytes as they are).
local function dead_letter(prefix, id, fields, reason)
  local letter = {id = id, reason = reason}
  if fields then
    letter.xid = fields.xid
    letter.deliveries = tonumber(fields.deliveries)
    letter.service = fields.service
    letter.timestamp = fields.timestamp
    letter.body = fields.body
    if fields.outs then
      local ok, outs = pcall(cjson.decode, fields.outs)
      if ok then
        letter.outs = outs
      end
    end
  end
  redis.call('LPUSH', prefix .. 'dead', cjson.encode(letter))
end
