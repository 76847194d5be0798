-- rcontrol_delete.lua: remove a declared deployment (rcontrol delete), logged, the controller
-- woken; the controller then retires its instances.
--
-- KEYS[1]  <ns>:rcontrol:deployments   KEYS[2]  <ns>:rcontrol:deployment:<name>
-- KEYS[3]  <ns>:rcontrol:events        KEYS[4]  <ns>:rcontrol:wake
-- ARGV[1]  the deployment's name   ARGV[2]  events cap   ARGV[3]  by
--
-- Returns 1 when it was declared, 0 when not.
--!include rcontrol_fence
local was = redis.call('SREM', KEYS[1], ARGV[1]) + redis.call('DEL', KEYS[2])
if was == 0 then
  return 0
end
event(KEYS[3], ARGV[2], 'delete', ARGV[1], '', '', 'deployment deleted', ARGV[3])
wake(KEYS[4])
return 1
