-- KEYS: brk. ARGV: 1 worker, 2 window (s), 3 min calls, 4 failure ratio, 5 open (s),
-- 6 successes to add, 7 idle ttl (ms). Returns: open left (s), fleet failures, seconds
-- since the fleet last reported a success (-1: never), answers the fleet ever reported.
local bk = KEYS[1]
local now = clock()
local est_f, est_n, answers = window(bk, now, tonumber(ARGV[2]), 1, tonumber(ARGV[6]))
local st = redis.call('HGET', bk, 'st')
if st ~= 'o' and est_n >= tonumber(ARGV[3]) and est_f >= tonumber(ARGV[4]) * est_n then
  redis.call('HSET', bk, 'st', 'o', 'ou', fmt(now + tonumber(ARGV[5])), 'by', ARGV[1])
  redis.call('HDEL', bk, 'ph', 'pe')
  redis.call('HINCRBY', bk, 'opens', 1)
end
redis.call('PEXPIRE', bk, tonumber(ARGV[7]))
return {fmt(open_left(bk, now)), fmt(est_f), fmt(served_ago(bk, now)), answers}
