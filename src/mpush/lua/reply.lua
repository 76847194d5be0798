-- reply.lua: push answers to a reply list and (re)set its expiry, in one step — and only to a
-- reply list. A request message names the list its answer goes to; a message naming any other
-- key must not be able to write to it or expire it.
--
-- KEYS[1]  the reply list
-- ARGV[1]  seconds the list lives after this push (EXPIRE)
-- ARGV[2…] the answers, pushed in order with LPUSH
--
-- A reply list is absent, or a list with an expiry (every push gives it one). Anything else — a
-- key of another type, or a list without an expiry (a queue, not a reply list) — is left as it
-- is, and the script returns an error naming the key. Returns the list's new length.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and (kind ~= 'list' or redis.call('TTL', KEYS[1]) < 0) then
  return redis.error_reply('NOTREPLY ' .. KEYS[1] .. ' is not a reply list (' .. kind .. ')')
end
local length = 0
for first = 2, #ARGV, 1000 do
  length = redis.call('LPUSH', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return length
