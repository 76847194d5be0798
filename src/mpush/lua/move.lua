-- move.lua: move up to ARGV[1] messages from one list to every one of several lists, atomically.
--
-- KEYS[1]     the input list (producers LPUSH, we take from the right: oldest first)
-- KEYS[2..n]  the output lists; each gets every message, in the input's order
-- ARGV[1]     batch: most messages to move in this call (at most 5000: unpack's stack limit)
-- ARGV[2]     capacity: trim each output to its newest N messages, 0 for no trim
-- ARGV[3]     expire: EXPIRE each output list this many seconds, 0 for none
--
-- Returns {moved, trimmed}: messages taken from the input, and messages the trim dropped.
-- The messages never leave Redis, so a client killed at any instant loses and duplicates nothing.
--!include push

local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then
  return {0, 0}
end
return {#msgs, push_to_outputs(2, msgs, tonumber(ARGV[2]), tonumber(ARGV[3]))}
