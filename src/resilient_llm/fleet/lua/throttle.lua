-- KEYS: rate. ARGV: 1 cooldown (s), 2 idle ttl (ms). Returns: cut (1/0), the fleet's new rate.
local rk = KEYS[1]
local now = clock()
local f = fields(rk)
local r, rt, tau = pace(rk, f, now)
if f.ct and now - tonumber(f.ct) < tonumber(ARGV[1]) then
  return {0, fmt(r or -1)}
end
-- The headers' burst is not believed from now on (see pace in the prelude).
if not f.qb then redis.call('HSET', rk, 'qb', 1) end
f.qb = '1'
-- The cut is from the fleet's pace, or without one from what the provider accepted lately;
-- with nothing measured yet a 429 says nothing about the rate to keep.
local base = r or num(f.sm, 0)
if base <= 0 then
  redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
  return {0, fmt(-1)}
end
base = math.max(base, FLOOR)
local K = (base * (1 - BETA) / C3) ^ (1 / 3)
redis.call('HSET', rk, 'ct', fmt(now), 'ck', fmt(K), 'cw', fmt(base))
redis.call('HINCRBY', rk, 'th', 1)
-- The provider's bucket is empty: nobody has a burst left.
local g = fields(rk)
local r2, rt2, tau2 = pace(rk, g, now)
if r then redis.call('HSET', rk, 'ra', fmt(math.max(num(f.ra, now), now + tau2))) end
if rt then redis.call('HSET', rk, 'ta', fmt(math.max(num(f.ta, now), now + tau2))) end
redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
return {1, fmt(BETA * base)}
