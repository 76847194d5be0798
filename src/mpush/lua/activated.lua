-- activated.lua: a standby instance marks itself active, if its registration still exists.
--
-- KEYS[1]  <ns>:service:<id>, the instance's registration hash
--
-- Sets standby = 0 and activated = Redis TIME ("seconds.micros"). Returns that stamp, or false
-- when the registration is gone (deleted while standing by: a remote shutdown is under way).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], 'standby', '0', 'activated', now)
return now
