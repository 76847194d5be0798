-- rcontrol_scale.lua: set a deployment's replicas (rcontrol scale), logged, the controller woken.
--
-- KEYS[1]  <ns>:rcontrol:deployment:<name>   KEYS[2]  <ns>:rcontrol:events
-- KEYS[3]  <ns>:rcontrol:wake
-- ARGV[1]  replicas   ARGV[2]  events cap   ARGV[3]  by   ARGV[4]  the deployment's name
--
-- Returns {-1, ''} when no such deployment is declared, {-2, 'min..max'} when it is autoscaled
-- (its autoscaler owns its replicas: nothing changed), {0, old} when it already had that many,
-- {1, old} when changed.
--!include rcontrol_fence
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, ''}
end
local bounds = redis.call('HGET', KEYS[1], 'autoscaled')
if bounds and bounds ~= '' then
  return {-2, bounds}
end
local old = redis.call('HGET', KEYS[1], 'replicas') or '0'
if old == ARGV[1] then
  return {0, old}
end
redis.call('HSET', KEYS[1], 'replicas', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
event(KEYS[2], ARGV[2], 'scale', ARGV[4], '', '', 'replicas ' .. old .. ' -> ' .. ARGV[1], ARGV[3])
wake(KEYS[3])
return {1, old}
