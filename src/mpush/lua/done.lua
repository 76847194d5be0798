-- done.lua: turn a batch of completion reports into response-time metrics (tracking.lua first).
--
-- KEYS[1]  <ns>:message:done   ids or xids pushed by consumers
-- KEYS[2]  <ns>:message:xids
-- KEYS[3]  <ns>:message:due
-- KEYS[4]  <ns>:metrics:done   count, sum, max, histo0 … histo100 of response times (seconds),
--                              bucketed by each message's own timeout; `unknown` counts reports
--                              naming no unfinished message (finished already, delisted, never
--                              tracked)
-- ARGV[1]  batch: most reports to take
-- ARGV[2]  <ns>:message:
--
-- A report is looked up as an xid first, then as an id. Each report is taken by exactly one
-- caller (RPOP inside the script), so several monitors never count a message twice.
-- Returns {done, unknown}.
local reports = redis.call('RPOP', KEYS[1], ARGV[1])
if not reports then
  return {0, 0}
end
local prefix = ARGV[2]
local now = now_ms()
local count, unknown, total, peak = 0, 0, 0, 0
local histo = {}
local batches = {} -- first → {timestamp, timeout}: read once per batch
for _, report in ipairs(reports) do
  local m = resolve(prefix, report)
  if m then
    local stamp, timeout
    if m.own then
      local f = redis.call('HMGET', prefix .. m.id, 'timestamp', 'timeout')
      stamp, timeout = f[1], f[2]
    else
      local b = batches[m.first]
      if not b then
        b = redis.call('HMGET', prefix .. 'batch:' .. m.first, 'timestamp', 'timeout')
        batches[m.first] = b
      end
      stamp, timeout = b[1], b[2]
    end
    local response = math.max(now / 1000 - (tonumber(stamp) or now / 1000), 0)
    timeout = tonumber(timeout) or 0
    local bucket = 'histo100'
    if timeout > 0 and response < timeout then
      bucket = 'histo' .. (math.min(math.floor(response * 10 / timeout), 9) * 10)
    end
    histo[bucket] = (histo[bucket] or 0) + 1
    count = count + 1
    total = total + response
    peak = math.max(peak, response)
    finish(prefix, m, 'done')
    if m.own then
      redis.call('HSET', prefix .. m.id, 'done', seconds(now),
        'response', string.format('%.3f', response))
    end
  else
    unknown = unknown + 1
  end
end
if count > 0 then
  redis.call('HINCRBY', KEYS[4], 'count', count)
  redis.call('HINCRBYFLOAT', KEYS[4], 'sum', string.format('%.6f', total))
  local current = tonumber(redis.call('HGET', KEYS[4], 'max'))
  if current == nil or peak > current then
    redis.call('HSET', KEYS[4], 'max', string.format('%.3f', peak))
  end
  for bucket, n in pairs(histo) do
    redis.call('HINCRBY', KEYS[4], bucket, n)
  end
end
bump(KEYS[4], 'unknown', unknown)
return {count, unknown}
