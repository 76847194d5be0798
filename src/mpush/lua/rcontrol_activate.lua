-- rcontrol_activate.lua: activate a standby instance (fenced): its assignment becomes active and
-- its process, waiting on its activation list, gets a push.
--
-- KEYS[1]  <ns>:rcontrol:state     KEYS[2]  <ns>:rcontrol:assignments
-- KEYS[3]  <ns>:rcontrol:events    KEYS[4]  <ns>:service:labels (instance id → registration id)
-- ARGV[1]  epoch     ARGV[2]  token (see rcontrol_fence.lua)
-- ARGV[3]  the instance id
-- ARGV[4]  its assignment exactly as the controller read it (compare-and-set)
-- ARGV[5]  the assignment to write (role active)
-- ARGV[6]  the registration prefix (<ns>:service:)   ARGV[7]  the activation suffix (:activate)
-- ARGV[8]  seconds the activation push is kept for a process that has not popped it yet
-- ARGV[9]  events cap   ARGV[10]  why ('' : no event, a repeated push)   ARGV[11]  by
-- ARGV[12] the deployment   ARGV[13]  the host
--
-- Returns {1, registration id}, {0, 'fenced'}, {0, 'changed'} (the assignment is not what was
-- read) or {0, 'unregistered'} (no registered process to activate: nothing changed).
--!include rcontrol_fence
if fenced() then
  return {0, 'fenced'}
end
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then
  return {0, 'changed'}
end
local sid = redis.call('HGET', KEYS[4], ARGV[3])
if not sid then
  return {0, 'unregistered'}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
local list = ARGV[6] .. sid .. ARGV[7]
redis.call('DEL', list)
redis.call('LPUSH', list, ARGV[2])
redis.call('EXPIRE', list, ARGV[8])
if ARGV[10] ~= '' then
  event(KEYS[3], ARGV[9], 'activate', ARGV[12], ARGV[3], ARGV[13], ARGV[10], ARGV[11])
end
return {1, sid}
