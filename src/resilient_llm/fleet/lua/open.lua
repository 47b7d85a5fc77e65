-- KEYS: brk. ARGV: 1 worker, 2 open (s), 3 idle ttl (ms), 4 window (s). Counts the failure
-- that tripped the worker's own window, and opens the fleet's circuit unless it is open.
-- Returns: open left (s), fleet failures, seconds since the fleet last reported a success
-- (-1: never), answers the fleet ever reported.
local bk = KEYS[1]
local now = clock()
local est_f, _, answers = window(bk, now, tonumber(ARGV[4]), 1, 0)
local left = open_left(bk, now)
if left <= 0 then
  redis.call('HSET', bk, 'st', 'o', 'ou', fmt(now + tonumber(ARGV[2])), 'by', ARGV[1])
  redis.call('HDEL', bk, 'ph', 'pe')
  redis.call('HINCRBY', bk, 'opens', 1)
  left = tonumber(ARGV[2])
end
redis.call('PEXPIRE', bk, tonumber(ARGV[3]))
return {fmt(left), fmt(est_f), fmt(served_ago(bk, now)), answers}
