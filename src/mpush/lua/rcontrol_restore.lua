-- rcontrol_restore.lua: after Redis lost its data (a new epoch), the controller that took the
-- lease declares again what it had read before (fenced), and lifts the instance counter above
-- every id it handed out, so no id is used twice.
--
-- KEYS[1]  <ns>:rcontrol:state     KEYS[2]  <ns>:rcontrol:deployments
-- KEYS[3]  <ns>:rcontrol:events    KEYS[4]  <ns>:rcontrol:wake
-- KEYS[5…] <ns>:rcontrol:deployment:<name>, one per deployment restored
-- ARGV[1]  epoch     ARGV[2]  token (see rcontrol_fence.lua)
-- ARGV[3]  the lowest seq to continue from   ARGV[4]  events cap   ARGV[5]  by
-- ARGV[6…] nine per deployment, in the order of KEYS[5…]: name, spec, replicas, release,
--          generation, autoscaled, rollout, previous, previous_release
--
-- Returns the number of deployments declared again (one absent now only), or -1 when fenced.
--!include rcontrol_fence
if fenced() then
  return -1
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[3])
end
local restored = 0
for i = 5, #KEYS do
  local at = 6 + (i - 5) * 9
  local name = ARGV[at]
  if redis.call('SISMEMBER', KEYS[2], name) == 0 and redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SADD', KEYS[2], name)
    redis.call('HSET', KEYS[i], 'spec', ARGV[at + 1], 'replicas', ARGV[at + 2],
      'release', ARGV[at + 3], 'generation', ARGV[at + 4], 'autoscaled', ARGV[at + 5],
      'rollout', ARGV[at + 6], 'previous', ARGV[at + 7], 'previous_release', ARGV[at + 8])
    event(KEYS[3], ARGV[4], 'restore', name, '', '',
      'Redis lost its data: declared again as last read, replicas ' .. ARGV[at + 2], ARGV[5])
    restored = restored + 1
  end
end
if restored > 0 then
  wake(KEYS[4])
end
return restored
