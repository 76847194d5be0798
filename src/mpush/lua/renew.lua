-- renew.lua: renew one instance's registration if, and only if, it is still ours.
--
-- KEYS[1]     <ns>:service:<id>
-- ARGV[1]     expire: seconds the registration lives unrenewed
-- ARGV[2]     the new `renewed` value (chosen by the instance: Redis time, microseconds)
-- ARGV[3..n]  the values that count as ours: the one we wrote last, and any we sent in renewals
--             whose replies were lost (they may or may not have been written)
--
-- Returns {1, new value} when renewed; {0, ''} when the key is gone (DEL = remote shutdown, or it
-- expired); {-1, value found} when someone else changed it (we must self-fence).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local current = redis.call('HGET', KEYS[1], 'renewed') or ''
for i = 3, #ARGV do
  if current == ARGV[i] then
    redis.call('HSET', KEYS[1], 'renewed', ARGV[2])
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    return {1, ARGV[2]}
  end
end
return {-1, current}
