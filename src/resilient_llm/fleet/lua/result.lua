-- KEYS: brk. ARGV: 1 worker, 2 ok (1/0), 3 open (s). Returns: closed / open / ignored.
local bk = KEYS[1]
local now = clock()
local b = redis.call('HMGET', bk, 'st', 'ph')
if b[1] ~= 'o' or b[2] ~= ARGV[1] then return {'ignored'} end
if ARGV[2] == '1' then
  redis.call('HDEL', bk, 'st', 'ou', 'ph', 'pe', 'by')
  redis.call('HSET', bk, 'fb', fmt(now), 'fc', 0, 'sc', 0, 'pf', 0, 'ps', 0)
  return {'closed'}
end
redis.call('HSET', bk, 'ou', fmt(now + tonumber(ARGV[3])))
redis.call('HDEL', bk, 'ph', 'pe')
redis.call('HINCRBY', bk, 'opens', 1)
return {'open'}
