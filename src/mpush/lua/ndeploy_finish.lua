-- ndeploy_finish.lua: answer a request, if it is still ours, and notify the requester.
--
-- KEYS[1]  <ns>:inflight:<instance>  our in-flight list
-- KEYS[2]  <ns>:res:<id>             the response hash (replaced as a whole)
-- KEYS[3]  <ns>:res:<id>:done        the notification list the requester BLPOPs
-- KEYS[4]  <ns>:req:<id>             the request hash (its `step` field is set to the outcome)
-- ARGV[1]  the request id
-- ARGV[2]  the outcome: "ok" or "error" (pushed on KEYS[3])
-- ARGV[3]  seconds the notification is kept
-- ARGV[4..n]  field, value pairs of the response
--
-- Returns the `finished` stamp (Redis TIME as "seconds.micros"), or false when the id is no longer
-- in our in-flight list (our registration lapsed and another instance took the request over):
-- then nothing is written, and the other instance answers.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return false
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'finished', now, unpack(ARGV, 4))
redis.call('HSET', KEYS[4], 'step', ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return now
