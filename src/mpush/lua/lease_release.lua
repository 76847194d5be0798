-- lease_release.lua: give a lease up at once (clean stop), but only while it is still ours.
--
-- KEYS[1]  the lease: a string "<token> <owner>"
-- ARGV[1]  our token
--
-- Returns 1 when released, 0 when it was not ours (any more).
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^%d+') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
