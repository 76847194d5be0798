-- rcontrol_retire.lua: take an instance away (fenced): its assignment goes, its registration is
-- deleted (a remote shutdown: the process stops taking work, finishes what it holds, exits 0),
-- and its agent is woken to see it go.
--
-- KEYS[1]  <ns>:rcontrol:state     KEYS[2]  <ns>:rcontrol:assignments
-- KEYS[3]  <ns>:rcontrol:events    KEYS[4]  <ns>:service:labels
-- KEYS[5]  <ns>:rcontrol:host:<host>:wake
-- ARGV[1]  epoch     ARGV[2]  token (see rcontrol_fence.lua)
-- ARGV[3]  the instance id
-- ARGV[4]  its assignment exactly as the controller read it (compare-and-set)
-- ARGV[5]  the registration prefix (<ns>:service:)
-- ARGV[6]  events cap   ARGV[7]  event kind (retire, reschedule)   ARGV[8]  why   ARGV[9]  by
-- ARGV[10] the deployment   ARGV[11]  the host
--
-- Returns {1, registration id or ''}, {0, 'fenced'} or {0, 'changed'}.
--!include rcontrol_fence
if fenced() then
  return {0, 'fenced'}
end
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then
  return {0, 'changed'}
end
redis.call('HDEL', KEYS[2], ARGV[3])
local sid = redis.call('HGET', KEYS[4], ARGV[3])
if sid then
  redis.call('DEL', ARGV[5] .. sid)
  redis.call('HDEL', KEYS[4], ARGV[3])
end
wake(KEYS[5])
event(KEYS[3], ARGV[6], ARGV[7], ARGV[10], ARGV[3], ARGV[11], ARGV[8], ARGV[9])
return {1, sid or ''}
