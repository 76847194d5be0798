-- renew.lua: renew one instance's registration if, and only if, it is still ours.
--
-- KEYS[1]  <ns>:service:<id>
-- ARGV[1]  the `renewed` value this instance wrote last
-- ARGV[2]  expire: seconds the registration lives unrenewed
--
-- Returns {1, new renewed value} when renewed; {0, ''} when the key is gone (DEL = remote
-- shutdown, or it expired); {-1, value found} when someone else changed it (we must self-fence).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local current = redis.call('HGET', KEYS[1], 'renewed') or ''
if current ~= ARGV[1] then
  return {-1, current}
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], 'renewed', now)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, now}
