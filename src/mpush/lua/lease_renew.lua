-- lease_renew.lua: extend a lease, but only while it is still ours.
--
-- KEYS[1]  the lease: a string "<token> <owner>"
-- ARGV[1]  our token
-- ARGV[2]  ttl in milliseconds
--
-- Returns 1 when renewed, 0 when the lease expired or belongs to another token now.
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^%d+') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
