-- done.lua: turn a batch of completion reports into response-time metrics (tracking.lua first).
--
-- KEYS[1]  <ns>:message:done   ids or xids pushed by consumers
-- KEYS[2]  <ns>:message:due
-- KEYS[3]  <ns>:message:ids
-- KEYS[4]  <ns>:metrics:done   count, sum, max, histo0 … histo100 of response times (seconds),
--                              bucketed by each message's own timeout; `unknown` counts reports
--                              naming no message in flight (finished, expired or never tracked)
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
local count, unknown, total, peak = 0, 0, 0, nil
local histo = {}
for _, report in ipairs(reports) do
  local id = tracked_id(prefix, KEYS[2], report)
  if not id and redis.call('ZSCORE', KEYS[2], report) then
    id = report
  end
  local fields = id and redis.call('HMGET', prefix .. id, 'timestamp', 'timeout', 'xid')
  if fields and fields[1] then
    local response = now / 1000 - tonumber(fields[1])
    if response < 0 then
      response = 0
    end
    local timeout = tonumber(fields[2]) or 0
    local bucket = 'histo100'
    if timeout > 0 and response < timeout then
      bucket = 'histo' .. (math.min(math.floor(response * 10 / timeout), 9) * 10)
    end
    histo[bucket] = (histo[bucket] or 0) + 1
    count = count + 1
    total = total + response
    if peak == nil or response > peak then
      peak = response
    end
    finish(prefix, KEYS[2], KEYS[3], id, 'done', fields[3])
    redis.call('HSET', prefix .. id, 'done', seconds(now), 'response', string.format('%.3f', response))
  else -- finished, expired (the due step delists it) or never tracked
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
