-- ndeploy_requeue.lua: put the request ids an instance holds back on the request queue.
--
-- KEYS[1]  <ns>:service:<owner>   the owner's registration
-- KEYS[2]  <ns>:inflight:<owner>  the owner's in-flight list (claims are LPUSHed: newest at the left)
-- KEYS[3]  <ns>:req               the request queue (taken from the right)
-- KEYS[4]  <ns>:inflight          the set of instance ids that may hold an in-flight list
-- ARGV[1]  the owner's instance id
-- ARGV[2]  "1" when the owner gives its own claims back (on shutdown); else the claims are only
--          taken when the owner's registration is gone (it died or was stopped)
--
-- Returns the number of ids put back, or -1 when the owner is alive and nothing was touched.
-- The ids go to the right end of the queue, oldest claim rightmost, so they are taken next.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
return moved
