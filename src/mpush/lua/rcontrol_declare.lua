-- rcontrol_declare.lua: change a declaration, compare-and-set on its generation: the active
-- controller's autoscaling, rollout progress and automatic rollback (fenced), and the rollback
-- command (not fenced: a declaring command, like apply).
--
-- KEYS[1]  <ns>:rcontrol:state     KEYS[2]  <ns>:rcontrol:deployment:<name>
-- KEYS[3]  <ns>:rcontrol:events    KEYS[4]  <ns>:rcontrol:wake
-- ARGV[1]  epoch     ARGV[2]  token (see rcontrol_fence.lua); both '' for a command
-- ARGV[3]  the generation the change was decided from
-- ARGV[4]  events cap   ARGV[5]  event kind   ARGV[6]  why   ARGV[7]  by   ARGV[8]  the name
-- ARGV[9..n]  field, value pairs to set on the declaration
--
-- Returns {1, new generation}, {0, 'fenced'}, {0, 'changed'} (the declaration changed since it
-- was read: nothing done) or {0, 'missing'} (no such declaration).
--!include rcontrol_fence
if ARGV[1] ~= '' and fenced() then
  return {0, 'fenced'}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0, 'missing'}
end
if (redis.call('HGET', KEYS[2], 'generation') or '0') ~= ARGV[3] then
  return {0, 'changed'}
end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
event(KEYS[3], ARGV[4], ARGV[5], ARGV[8], '', '', ARGV[6], ARGV[7])
wake(KEYS[4])
return {1, generation}
