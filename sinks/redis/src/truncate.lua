-- Moves a table's truncation watermark and, if it really moved, removes up to ARGV[3] of the
-- table's keys per call (the caller repeats until 0 is returned) and forgets their versions.
-- KEYS: 1 key set, 2 versions hash, 3 watermark. ARGV: 1 commit, 2 change, 3 batch size, 4 "first"
-- `newer` comes from versions.lua, which is put in front of this script.
if ARGV[4] == 'first' then
  if not newer(redis.call('GET', KEYS[3]), ARGV[1], ARGV[2]) then return -1 end
  redis.call('SET', KEYS[3], ARGV[1] .. ':' .. ARGV[2])
  redis.call('DEL', KEYS[2])
end
local keys = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
if #keys > 0 then redis.call('DEL', unpack(keys)) end
return #keys
