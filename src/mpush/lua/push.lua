-- push.lua: what every move shares — pushing a batch to its output lists; not a script by itself
-- (a script includes it with `--!include push`).
--
-- push_to_outputs(first, msgs, capacity, expire): LPUSH msgs (oldest first, as RPOP gave them, so
-- the oldest ends nearest the tail) to every list KEYS[first..#KEYS]; with capacity > 0 trim each
-- to its newest `capacity` messages, with expire > 0 EXPIRE each. Returns how many the trims
-- dropped.
local function push_to_outputs(first, msgs, capacity, expire)
  local trimmed = 0
  for i = first, #KEYS do
    local length = redis.call('LPUSH', KEYS[i], unpack(msgs))
    if capacity > 0 and length > capacity then
      redis.call('LTRIM', KEYS[i], 0, capacity - 1)
      trimmed = trimmed + length - capacity
    end
    if expire > 0 then
      redis.call('EXPIRE', KEYS[i], expire)
    end
  end
  return trimmed
end
