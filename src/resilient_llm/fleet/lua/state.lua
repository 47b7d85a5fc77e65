-- KEYS: brk. ARGV: 1 window (s). Returns: open left (s), fleet failures, seconds since the
-- fleet last reported a success (-1: never), answers the fleet ever reported.
local bk = KEYS[1]
local now = clock()
local est_f, _, answers = window(bk, now, tonumber(ARGV[1]), 0, 0)
return {fmt(open_left(bk, now)), fmt(est_f), fmt(served_ago(bk, now)), answers}
