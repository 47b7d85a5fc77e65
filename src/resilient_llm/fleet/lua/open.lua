-- KEYS: brk. ARGV: 1 worker, 2 open (s), 3 idle ttl (ms). Returns: open left (s).
local bk = KEYS[1]
local now = clock()
local left = open_left(bk, now)
if left <= 0 then
  redis.call('HSET', bk, 'st', 'o', 'ou', fmt(now + tonumber(ARGV[2])), 'by', ARGV[1])
  redis.call('HDEL', bk, 'ph', 'pe')
  redis.call('HINCRBY', bk, 'opens', 1)
  left = tonumber(ARGV[2])
end
redis.call('PEXPIRE', bk, tonumber(ARGV[3]))
return {fmt(left)}
