-- Versions are "commit:change", each an unsigned decimal integer. They are compared as text, by
-- length and then digit by digit: Lua numbers are doubles, exact only below 2^53.
local function trim(n) return (string.gsub(n, '^0+(%d)', '%1')) end
local function less(a, b)
  a, b = trim(a), trim(b)
  if #a ~= #b then return #a < #b end
  return a < b
end
-- Whether commit `c`, change `h` is newer than the stored "commit:change" (none: newer).
local function newer(stored, c, h)
  if not stored then return true end
  local sc, sh = string.match(stored, '^(%d+):(%d+)$')
  return less(sc, c) or (trim(sc) == trim(c) and less(sh, h))
end
