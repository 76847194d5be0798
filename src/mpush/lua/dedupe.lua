-- dedupe.lua: move up to ARGV[1] messages from one list to another, passing on only those whose
-- xid was not passed on within the window; atomically.
--
-- KEYS[1]     the input list (producers LPUSH, we take from the right: oldest first)
-- KEYS[2]     the output list
-- KEYS[3]     optional: the list duplicates are pushed to (without it they are dropped)
-- ARGV[1]     batch: most messages to take in this call (at most 5000: unpack's stack limit)
-- ARGV[2]     the seen-marker prefix: a message passes only if `SET <prefix><xid> 1 NX PX window`
--             succeeds. These keys are made here, not declared: on Redis Cluster the prefix
--             carries the hash tag of KEYS so every marker hashes to their slot.
-- ARGV[3]     window, milliseconds
--
-- xid (SPEC §2): the message itself if it is a decimal number (digits only); else meta.id of a
-- JSON object that has one (a string, or an integral number); else the SHA-1 hex of the message.
--
-- Returns {taken, duplicates}: messages taken from the input, and how many of them were repeats.
-- The messages never leave Redis, so a client killed at any instant loses and duplicates nothing.
--!include xid

local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then
  return {0, 0}
end
local prefix, window = ARGV[2], ARGV[3]
local passed, repeats = {}, {}
for m = 1, #msgs do
  local msg = msgs[m]
  if redis.call('SET', prefix .. xid_of(msg), 1, 'NX', 'PX', window) then
    passed[#passed + 1] = msg
  else
    repeats[#repeats + 1] = msg
  end
end
-- RPOP gave oldest first; LPUSH of that sequence leaves the oldest nearest the tail.
if #passed > 0 then
  redis.call('LPUSH', KEYS[2], unpack(passed))
end
if #repeats > 0 and KEYS[3] then
  redis.call('LPUSH', KEYS[3], unpack(repeats))
end
return {#msgs, #repeats}
