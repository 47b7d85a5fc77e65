-- KEYS: brk. ARGV: 1 worker, 2 hold (s), 3 poll (s). Returns: verdict, seconds.
-- verdict: closed (go ahead), open (for seconds), held (someone probes; ask again), probe (yours).
local bk = KEYS[1]
local now = clock()
local b = redis.call('HMGET', bk, 'st', 'ou', 'ph', 'pe')
if b[1] ~= 'o' then return {'closed', '0'} end
local ou = num(b[2], now)
if ou > now then return {'open', fmt(ou - now)} end
if b[3] and b[3] ~= ARGV[1] and num(b[4], 0) > now then
  return {'held', fmt(math.min(num(b[4], 0) - now, tonumber(ARGV[3])))}
end
redis.call('HSET', bk, 'ph', ARGV[1], 'pe', fmt(now + tonumber(ARGV[2])))
redis.call('HINCRBY', bk, 'probes', 1)
return {'probe', '0'}
