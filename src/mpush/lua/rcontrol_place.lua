-- rcontrol_place.lua: assign a new instance of a deployment to a host (fenced).
--
-- KEYS[1]  <ns>:rcontrol:state (epoch, token, seq)
-- KEYS[2]  <ns>:rcontrol:assignments
-- KEYS[3]  <ns>:rcontrol:events
-- KEYS[4]  <ns>:rcontrol:host:<host>:wake (its agent waits on it)
-- ARGV[1]  epoch     ARGV[2]  token (see rcontrol_fence.lua)
-- ARGV[3]  the deployment's name
-- ARGV[4]  the assignment (JSON: deployment, host, role, release, run, token, placed)
-- ARGV[5]  events cap   ARGV[6]  event kind (place)   ARGV[7]  why   ARGV[8]  by
-- ARGV[9]  the host's name (for the event)
--
-- Returns {1, instance id} (<deployment>-<seq>), or {0, 'fenced'}.
--!include rcontrol_fence
if fenced() then
  return {0, 'fenced'}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local id = ARGV[3] .. '-' .. seq
redis.call('HSET', KEYS[2], id, ARGV[4])
wake(KEYS[4])
event(KEYS[3], ARGV[5], ARGV[6], ARGV[3], id, ARGV[9], ARGV[7], ARGV[8])
return {1, id}
