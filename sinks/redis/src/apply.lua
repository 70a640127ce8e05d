-- Applies one change to one key, only if it is newer than what Redis holds for that key and newer
-- than the table's last truncate. Versions are "commit:change" (Ripple's `Version`); `newer` comes
-- from versions.lua and `members` from members.lua, which are put in front of this script.
--
-- KEYS: 1 data key, 2 versions hash of the table, 3 truncation watermark of the table, 4 key set
-- ARGV: 1 commit, 2 change, 3 ttl seconds (0: none), 4 op: del | hash | json | string, then
--   hash:   5 number of fields to set n, then n field/value pairs, then fields to clear
--   json:   5 document, then names of fields to keep from the stored document (unchanged values),
--           each JSON-encoded as the document writes it ("name", quotes included)
--   string: 5 value
local key = KEYS[1]
local c, h = ARGV[1], ARGV[2]
if not newer(redis.call('GET', KEYS[3]), c, h) then return 0 end
if not newer(redis.call('HGET', KEYS[2], key), c, h) then return 0 end
local version = ARGV[1] .. ':' .. ARGV[2]

local ttl, op = tonumber(ARGV[3]), ARGV[4]
-- The data is written before the version: a write Redis refuses (a key of another type) fails the
-- script before anything is stored, so the change can be applied again once the cause is gone.
if op == 'del' then
  redis.call('DEL', key)
  redis.call('SREM', KEYS[4], key)
  -- Deleted keys keep their version too: a late, older insert must not bring them back.
  redis.call('HSET', KEYS[2], key, version)
  return 1
elseif op == 'hash' then
  local n = tonumber(ARGV[5])
  local first_clear = 6 + 2 * n
  if first_clear <= #ARGV then redis.call('HDEL', key, unpack(ARGV, first_clear, #ARGV)) end
  if n > 0 then redis.call('HSET', key, unpack(ARGV, 6, 5 + 2 * n)) end
elseif op == 'json' then
  local doc = ARGV[5]
  if #ARGV > 5 then
    local old = redis.call('GET', key)
    if old then
      -- Unchanged values are copied from the stored document as text (members.lua), never
      -- decoded and encoded again.
      local prev = members(old)
      if not prev then return redis.error_reply('the stored value of ' .. key .. ' is not a JSON object') end
      local parts, empty = {string.sub(doc, 1, -2)}, doc == '{}'
      for i = 6, #ARGV do
        local raw = prev[ARGV[i]]
        if raw then
          parts[#parts + 1] = (empty and '' or ',') .. ARGV[i] .. ':' .. raw
          empty = false
        end
      end
      parts[#parts + 1] = '}'
      doc = table.concat(parts)
    end
  end
  redis.call('SET', key, doc)
elseif op == 'string' then
  redis.call('SET', key, ARGV[5])
end
if ttl > 0 then redis.call('EXPIRE', key, ttl) end
redis.call('SADD', KEYS[4], key)
redis.call('HSET', KEYS[2], key, version)
return 1
