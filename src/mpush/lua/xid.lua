-- xid.lua: the xid of a message (SPEC §2), shared by every script that needs one; not a script by
-- itself. A script includes it with a line `--!include xid` (connection.load_lua expands it), so
-- message tracking and mdedupe read the same id from the same message.
--
-- The xid of a message: the message itself if it is a decimal number; else meta.id if the message
-- is a JSON object with one (a non-empty string, or an integer); else the SHA-1 of the message.
local function xid_of(msg)
  local head = string.byte(msg, 1)
  if head and head >= 48 and head <= 57 and not string.find(msg, '%D') then
    return msg
  end
  if head == 123 or (head and head <= 32 and string.find(msg, '^%s*{')) then
    local ok, doc = pcall(cjson.decode, msg)
    if ok and type(doc) == 'table' and type(doc.meta) == 'table' then
      local id = doc.meta.id
      if type(id) == 'string' and id ~= '' then
        return id
      end
      if type(id) == 'number' and id == math.floor(id) and math.abs(id) < 2 ^ 53 then
        return string.format('%.0f', id + 0) -- + 0 turns -0 into 0
      end
    end
  end
  return redis.sha1hex(msg)
end
