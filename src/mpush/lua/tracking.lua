-- tracking.lua: functions shared by the message-tracking scripts; not a script by itself.
-- Loaded in front of move_tracked.lua, done.lua, due.lua and the consumer scripts.
--
-- Message hash fields (<ns>:message:<id>): timestamp, deadline (seconds, Redis TIME), timeout
-- (seconds), xid, service, deliveries, state (inflight | retry | late | done | dead | expired);
-- with retry on also max_deliveries, backoff, backoff_max, outs (JSON array) and body; error
-- while a consumer's failure report waits for the monitor.

-- The xid of a message: the message itself if it is a decimal number; else meta.id if the message
-- is a JSON object with one (a string, or an integer); else the SHA-1 of the message.
-- Returns xid, type ('number', 'meta' or 'sha1').
local function xid_of(msg)
  if string.find(msg, '^%d+$') then
    return msg, 'number'
  end
  if string.find(msg, '^%s*{') then
    local ok, doc = pcall(cjson.decode, msg)
    if ok and type(doc) == 'table' and type(doc.meta) == 'table' then
      local id = doc.meta.id
      if type(id) == 'string' and id ~= '' then
        return id, 'meta'
      end
      if type(id) == 'number' and id == math.floor(id) and math.abs(id) < 2 ^ 53 then
        return string.format('%.0f', id), 'meta'
      end
    end
  end
  return redis.sha1hex(msg), 'sha1'
end

-- Redis TIME in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Milliseconds as the seconds text stored in the message hash, e.g. 1459103237.125
local function seconds(ms)
  return string.format('%.3f', ms / 1000)
end

-- Stop tracking message `id`: off the due set and the ids list, its xid mapping dropped (if it
-- is still this message's), body and outs dropped, `state` set. The hash itself expires later.
local function finish(prefix, due_key, ids_key, id, state, xid)
  redis.call('ZREM', due_key, id)
  redis.call('LREM', ids_key, -1, id)
  local mkey = prefix .. id
  if xid then
    local xkey = prefix .. 'xid:' .. xid
    if redis.call('HGET', xkey, 'id') == id then
      redis.call('DEL', xkey)
    end
  end
  if redis.call('EXISTS', mkey) == 1 then
    redis.call('HSET', mkey, 'state', state)
    redis.call('HDEL', mkey, 'body', 'outs', 'error')
  end
end

-- The id of the tracked, still unfinished message with this xid, or nil.
local function tracked_id(prefix, due_key, xid)
  local id = redis.call('HGET', prefix .. 'xid:' .. xid, 'id')
  if id and redis.call('ZSCORE', due_key, id) then
    return id
  end
  return nil
end

-- Add `n` to `field` of a metrics hash (nothing when n is 0).
local function bump(key, field, n)
  if n ~= 0 then
    redis.call('HINCRBY', key, field, n)
  end
end

-- A dead letter: JSON with the message's id, xid, deliveries, reason, service, timestamp, outs
-- and body (the body's bytes as they are).
local function dead_letter(dead_key, id, fields, reason)
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
  redis.call('LPUSH', dead_key, cjson.encode(letter))
end

-- The message hash as a table, or nil when it is gone.
local function message_fields(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local fields = {}
  for i = 1, #flat, 2 do
    fields[flat[i]] = flat[i + 1]
  end
  return fields
end
