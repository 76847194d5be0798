-- rcontrol_fence.lua: included by the controller's steps (--!include rcontrol_fence).
--
-- A step runs only for the controller that holds the current fencing token in the current epoch:
-- KEYS[1] must be <ns>:rcontrol:state, ARGV[1] the epoch and ARGV[2] the token the controller got
-- with the lease. A controller paused past its lease (a newer token was handed out since) and one
-- from before Redis lost its data (a new epoch) are refused.
local function fenced()
  local state = redis.call('HMGET', KEYS[1], 'epoch', 'token')
  return state[1] ~= ARGV[1] or state[2] ~= ARGV[2]
end

-- One entry of the event log <ns>:rcontrol:events, trimmed to about `cap` entries.
local function event(stream, cap, kind, deployment, instance, host, why, by)
  redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', 'kind', kind, 'deployment', deployment,
    'instance', instance, 'host', host, 'why', why, 'by', by)
end

-- Wake a waiting reader (an agent, the controller): one entry at most, gone after a minute.
local function wake(list)
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, 60000)
end
