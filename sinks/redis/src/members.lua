-- The members of a stored JSON document, as raw text, without decoding them: Redis's cjson keeps
-- 14 significant digits and writes [] as {}, so a value that went through it would not come back as
-- it was written. Documents are Ripple's own (an object, compact at its top level); `members`
-- returns a table from each member's name, as written (quotes and escapes included), to its value.
local function string_end(doc, s)
  local p = s + 1
  while true do
    local q = string.find(doc, '["\\]', p)
    if not q then return nil end
    if string.sub(doc, q, q) == '"' then return q end
    p = q + 2
  end
end

local function value_end(doc, s)
  local c = string.sub(doc, s, s)
  if c == '"' then return string_end(doc, s) end
  if c == '{' or c == '[' then
    local depth, p = 1, s + 1
    while true do
      local q = string.find(doc, '[%[%]{}"]', p)
      if not q then return nil end
      local ch = string.sub(doc, q, q)
      if ch == '"' then
        q = string_end(doc, q)
        if not q then return nil end
      elseif ch == '{' or ch == '[' then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return q end
      end
      p = q + 1
    end
  end
  local q = string.find(doc, '[,}%s]', s)
  return q and q - 1
end

local function members(doc)
  if string.sub(doc, 1, 1) ~= '{' then return nil end
  local out, pos = {}, 2
  while true do
    local s = string.find(doc, '"', pos, true)
    if not s then return out end
    local e = string_end(doc, s)
    local vs = e and string.find(doc, '[^%s:]', e + 1)
    local ve = vs and value_end(doc, vs)
    if not ve then return nil end
    out[string.sub(doc, s, e)] = string.sub(doc, vs, ve)
    pos = ve + 1
  end
end
