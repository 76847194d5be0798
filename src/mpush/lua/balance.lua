-- balance.lua: move up to ARGV[1] messages from one list, each to the output list that is the
-- least full at that moment (length / weight), atomically.
--
-- KEYS[1]     the input list (producers LPUSH, we take from the right: oldest first)
-- KEYS[2]     the round-robin cursor (a string: the 0-based output index to try first on a tie),
--             shared by every replica so ties rotate across all of them
-- KEYS[3..n]  the output lists
-- ARGV[1]     batch: most messages to move in this call (at most 5000: unpack's stack limit)
-- ARGV[2..]   three per output, in KEYS order: weight (> 0), cap (most messages the output may
--             hold, 0 for none), live (1: eligible, 0: skip it — its consumers are gone)
--
-- Each message goes to the eligible output with the lowest length / weight; ties go to the first
-- one at or after the cursor, and the cursor moves past the chosen output. An output at its cap is
-- not eligible. When no output is eligible, messages stay on the input (back pressure).
--
-- Returns {moved, held, n1, n2, ...}: messages moved; 1 if messages were left on the input because
-- every eligible output is full (or none is live), else 0; and how many each output received.
-- The messages never leave Redis, so a client killed at any instant loses and duplicates nothing.
local outputs = #KEYS - 2
local weight, cap, len, free = {}, {}, {}, {}
local room, unlimited = 0, false
for i = 1, outputs do
  local base = 3 * i - 1
  weight[i] = tonumber(ARGV[base])
  cap[i] = tonumber(ARGV[base + 1])
  if ARGV[base + 2] == '1' then
    len[i] = redis.call('LLEN', KEYS[i + 2])
    if cap[i] == 0 then
      unlimited = true
      free[i] = true
    elseif len[i] < cap[i] then
      room = room + cap[i] - len[i]
      free[i] = true
    end
  end
end

local batch = tonumber(ARGV[1])
local want = batch
if not unlimited and room < want then
  want = room
end
local msgs = false
if want > 0 then
  msgs = redis.call('RPOP', KEYS[1], want)
end
local result = {0, 0}
for i = 1, outputs do
  result[i + 2] = 0
end
if not msgs then
  -- Nothing moved: held back if the input has messages but no output has room or is live.
  if want == 0 and redis.call('LLEN', KEYS[1]) > 0 then
    result[2] = 1
  end
  return result
end

local cursor = (tonumber(redis.call('GET', KEYS[2])) or 0) % outputs
local shares = {}
for i = 1, outputs do
  shares[i] = {}
end
for m = 1, #msgs do
  local best = nil
  for step = 0, outputs - 1 do
    local i = (cursor + step) % outputs + 1
    -- len[i] / weight[i] < len[best] / weight[best], without division
    if free[i] and (best == nil or len[i] * weight[best] < len[best] * weight[i]) then
      best = i
    end
  end
  local share = shares[best]
  share[#share + 1] = msgs[m]
  len[best] = len[best] + 1
  if cap[best] > 0 and len[best] >= cap[best] then
    free[best] = nil
  end
  cursor = best % outputs -- the 0-based index of the output after best
end
for i = 1, outputs do
  if #shares[i] > 0 then
    -- RPOP gave oldest first; LPUSH of that sequence leaves the oldest nearest the tail.
    redis.call('LPUSH', KEYS[i + 2], unpack(shares[i]))
  end
  result[i + 2] = #shares[i]
end
redis.call('SET', KEYS[2], cursor)
result[1] = #msgs
-- Held back: the caps allowed fewer than a batch and the input still has messages.
if want < batch and redis.call('LLEN', KEYS[1]) > 0 then
  result[2] = 1
end
return result
