-- register.lua: create one instance's registration hash, refusing to overwrite an existing one.
--
-- KEYS[1]     <ns>:service:<id>
-- ARGV[1]     expire: seconds the registration lives unrenewed
-- ARGV[2..n]  field, value pairs describing the instance (service, host, pid, queues …)
--
-- Returns the `started`/`renewed` stamp (Redis TIME as "seconds.micros"), or false when the key
-- already exists (the id counter was reset under a live registry).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], 'started', now, 'renewed', now, unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return now
