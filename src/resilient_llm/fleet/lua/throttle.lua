-- KEYS: rate. ARGV: 1 cooldown (s), 2 idle ttl (ms), 3 429s this worker got since its last
-- report (this one included), 4 limited (1: the worker reads its 429 as a rate limit's, 2:
-- the provider's headers said the limit is spent).
-- Returns: cut (1/0), the fleet's new rate, whether its 429s are over a quarter of its answers
-- (1/0), seconds since a 429 last cut its rate (-1 never), seconds since a trial found its
-- 429s refused at any rate (-1 never). A 429 cuts only as a rate limit's answer, in the
-- worker's judgement or in the fleet's (its share of 429s, or a cut within REFUSAL_MEMORY):
-- each worker alone sees too few answers to tell a limit from 429s given at random. The
-- first cut of an episode that neither the headers nor the fleet's share called a limit's
-- is tried (see trial in the prelude), and only they cut again until the trial ends: a
-- worker's judgement may be a chance run of its few answers, or the fleet's cut read back.
local rk = KEYS[1]
local now = clock()
local f = fields(rk)
local over, since_cut, limited, acquitted = refusals(rk, f, 0, num(ARGV[3], 0), 0, now)
local r, rt, tau = pace(rk, f, now)
local function answer(cut, rate)
  redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
  return {cut, fmt(rate or -1), over and 1 or 0, fmt(since_cut), fmt(acquitted)}
end
local shown = ARGV[4] == '2'
-- After an acquittal a worker's judgement is not enough: it may be the fleet's, read back.
local judged = ARGV[4] == '1' and not (f.aq and now < tonumber(f.aq))
if not (limited or judged or shown) then return answer(0, r) end
if f.ct and now - tonumber(f.ct) < tonumber(ARGV[1]) then return answer(0, r) end
if f.ts and not (shown or over) then return answer(0, r) end
local episode = since_cut >= 0 and since_cut < REFUSAL_MEMORY
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
  if accepted <= 0 then return answer(0, nil) end
  base = math.max(HEADROOM * accepted, FLOOR)
  K = 0
  new_rate = base
end
-- (`lc` outlives the recovery: while it is recent, the fleet's 429s are a rate limit's answers.)
redis.call('HSET', rk, 'ct', fmt(now), 'ck', fmt(K), 'cw', fmt(base), 'lc', fmt(now))
redis.call('HINCRBY', rk, 'th', 1)
redis.call('HDEL', rk, 'aq', 'as')  -- a cut ends an acquittal
since_cut = 0
-- On trial when only a worker's judgement made it, the first of an episode, with a share
-- refused before it and answers fast enough to end it. Not when the headers said the limit
-- is spent, nor when the fleet's own share says so: 64 workers against a quantized limit
-- report answers too unevenly for a trial to measure rates by (one undid the cut and left
-- 60 % of the attempts refused). Nor the cuts that follow in the episode: a limit met again
-- as CUBIC grows back is answered at once (tried, each held the next cut until its verdict: the
-- fleet of 64 had 1.2 % of its attempts after 10 s refused, up to 2.2 % in one run).
local a = num(f.sm, 0)
local s = a + num(f.rm, 0)
if shown or over or episode then
  redis.call('HDEL', rk, 'ts', 'tn', 'tq', 'tbs', 'tba')
elseif a >= 0 and a < s and s * TRIAL_TIME >= TRIAL_SENDS then
  redis.call('HSET', rk, 'ts', fmt(now + TRIAL_LAG), 'tn', 0, 'tq', 0, 'tbs', fmt(s),
             'tba', fmt(a))
end
-- The provider's bucket is empty: nobody has a burst left.
local g = fields(rk)
local r2, rt2, tau2 = pace(rk, g, now)
if r then redis.call('HSET', rk, 'ra', fmt(math.max(num(f.ra, now), now + tau2))) end
if rt then redis.call('HSET', rk, 'ta', fmt(math.max(num(f.ta, now), now + tau2))) end
return answer(1, new_rate)
