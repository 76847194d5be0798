-- metrics.lua: add a batch of observations to one metrics hash, atomically.
--
-- KEYS[1]     <ns>:metrics:<name>
-- ARGV[1]     count of observations to add (0 for plain counters only)
-- ARGV[2]     their sum
-- ARGV[3]     their maximum, or '' for none: `max` is raised only if this is larger (atomic max)
-- ARGV[4]     seconds the hash lives after this write (0: for ever); a release's copy expires
-- ARGV[5]     the scale T of the histogram buckets (the observations' timeout), or '': kept in
--             the field histo_scale (the latest writer's), so a reader can turn buckets to seconds
-- ARGV[6..n]  field, increment pairs: histo0 … histo100 buckets and plain counters
--
-- Returns the number of fields touched.
local touched = 0
if tonumber(ARGV[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'count', ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[2])
  touched = 2
end
if ARGV[3] ~= '' then
  local current = tonumber(redis.call('HGET', KEYS[1], 'max'))
  if current == nil or tonumber(ARGV[3]) > current then
    redis.call('HSET', KEYS[1], 'max', ARGV[3])
    touched = touched + 1
  end
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'histo_scale', ARGV[5])
end
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  touched = touched + 1
end
if tonumber(ARGV[4]) > 0 and touched > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return touched
