-- vpush_deliver.lua (destination side): push a batch of messages, skipping the ones already
-- applied, unless a mover with a newer fencing token has written here.
--
-- KEYS[1]  the output list (consumers take from the right: oldest first)
-- KEYS[2]  the route's dedupe state OUT:vpush:<epoch>: token (highest fencing token seen),
--          seq (id of the last message applied), fenced (writes refused)
-- ARGV[1]  the mover's fencing token
-- ARGV[2]  the id of ARGV[4]; the others follow by one (one mover, in order: a watermark is an
--          exact dedupe)
-- ARGV[3]  window: EXPIRE the dedupe state this many seconds after the last write (0: never)
-- ARGV[4..n] the messages, oldest first
--
-- Returns {1, applied, skipped}, or {0, token} when refused: that newer token has written here.
local token = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[2], 'token', 'seq')
local seen = tonumber(state[1] or '0')
if token < seen then
  redis.call('HINCRBY', KEYS[2], 'fenced', 1)
  return {0, seen}
end
local last = tonumber(state[2] or '0')
local base = tonumber(ARGV[2])
local first = 4 + math.max(0, last - base + 1)
local applied = 0
if first <= #ARGV then
  -- oldest first: LPUSH of the sequence leaves the oldest nearest the tail
  redis.call('LPUSH', KEYS[1], unpack(ARGV, first, #ARGV))
  applied = #ARGV - first + 1
  redis.call('HSET', KEYS[2], 'token', ARGV[1], 'seq', string.format('%.0f', base + #ARGV - 4))
elseif token > seen then
  redis.call('HSET', KEYS[2], 'token', ARGV[1])
end
local window = tonumber(ARGV[3])
if window > 0 then
  redis.call('EXPIRE', KEYS[2], window)
end
return {1, applied, #ARGV - 3 - applied}
