-- unlabel.lua: drop one entry of the label index, if it still names the given instance.
--
-- KEYS[1]  <ns>:service:labels (hash: label → instance id)
-- ARGV[1]  the label
-- ARGV[2]  the instance id the entry must still hold (a newer instance may have taken the label)
--
-- Returns 1 when the entry was removed, 0 when it named another instance or was gone.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
