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
-- The CUBIC cut from the fleet's pace (W_max = r, r <- BETA*r, K = cbrt(W_max*(1 - BETA)/C)).
-- Unpaced, the fleet did not overshoot a pace of its own: what the provider accepted lately
-- is its capacity, so pacing starts just under that and grows from it (K = 0). With nothing
-- measured yet, a 429 says nothing about the rate to keep.
local base, K, new_rate
if r then
  base = math.max(r, FLOOR)
  K = (base * (1 - BETA) / C3) ^ (1 / 3)
  new_rate = BETA * base
else
  local accepted = num(f.sm, 0)
  if accepted <= 0 then
    redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
    return {0, fmt(-1)}
  end
  base = math.max(HEADROOM * accepted, FLOOR)
  K = 0
  new_rate = base
end
redis.call('HSET', rk, 'ct', fmt(now), 'ck', fmt(K), 'cw', fmt(base))
redis.call('HINCRBY', rk, 'th', 1)
-- The provider's bucket is empty: nobody has a burst left.
local g = fields(rk)
local r2, rt2, tau2 = pace(rk, g, now)
if r then redis.call('HSET', rk, 'ra', fmt(math.max(num(f.ra, now), now + tau2))) end
if rt then redis.call('HSET', rk, 'ta', fmt(math.max(num(f.ta, now), now + tau2))) end
redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
return {1, fmt(new_rate)}
