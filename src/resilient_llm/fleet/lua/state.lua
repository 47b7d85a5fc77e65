-- KEYS: brk. ARGV: 1 window (s). Returns: open left (s), fleet failures, fleet successes.
local bk = KEYS[1]
local now = clock()
local est_f, est_n = window(bk, now, tonumber(ARGV[1]), 0, 0)
return {fmt(open_left(bk, now)), fmt(est_f), fmt(est_n - est_f)}
