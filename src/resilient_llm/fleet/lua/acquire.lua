-- KEYS: rate, brk, who. ARGV: 1 worker, 2 want (calls), 3 tokens per call, 4 batch (0/1),
-- 5 ahead (s), 6-9 learned rr rc tr tc ('' unknown), 10-11 observed remaining (requests,
-- tokens), 12 observation age (s), 13 successes to add, 14 endpoint, 15 model, 16 breaker
-- window (s), 17 idle ttl (ms), 18 this worker's demand (calls/s, 0 unknown), 19 429s this
-- worker got since its last report.
-- Returns: k, first use (s after now; permit j from first + j·spacing), spacing (s), tau (s),
-- rate (-1 unpaced), active workers, wait (s, when k = 0), breaker open left (s), fleet
-- failures, tokens paced (1/0), first void base (s), void spacing (s): permit j is void after
-- void base + j·void spacing + tau (the earliest dimension's slot, so lateness stays <= tau),
-- whether the fleet's 429s are over a quarter of its answers (1/0; see refusals in the
-- prelude), seconds since a 429 last cut its rate (-1 never), seconds since a trial found
-- the fleet's 429s refused at any rate (-1 never).
local rk, bk, wk = KEYS[1], KEYS[2], KEYS[3]
local worker, want, per_call = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local batch, ahead = ARGV[4] == '1', tonumber(ARGV[5])
local now = clock()
local f = fields(rk)
-- Learned limits: capacities as reported, rates smoothed across workers' estimates.
local names = {'rr', 'rc', 'tr', 'tc'}
for i = 1, 4 do
  local v = tonumber(ARGV[5 + i])
  if v then
    if (i == 1 or i == 3) and f[names[i]] then v = 0.7 * tonumber(f[names[i]]) + 0.3 * v end
    f[names[i]] = fmt(v)
    redis.call('HSET', rk, names[i], f[names[i]])
  end
end
if not f.ep then redis.call('HSET', rk, 'ep', ARGV[14], 'md', ARGV[15]) end
redis.call('ZADD', wk, now, worker)
redis.call('ZREMRANGEBYSCORE', wk, '-inf', now - ACTIVE)
local active = math.max(1, redis.call('ZCARD', wk))
local r, rt, tau, recovering = pace(rk, f, now)
if per_call <= 0 then rt = nil end
local age = num(ARGV[12])
local share = RESERVE
if recovering then share = 2 * RESERVE end
local d = tonumber(ARGV[18])
-- One dimension (`rate` units per second, `units` per call): its GCRA state reconciled with
-- the provider's `remaining`, the increment per call, the burst lead and this priority's horizon.
-- A dimension without state (just learned, or expired while idle) starts with no credit: the
-- fleet does not know how much of the provider's bucket its unpaced calls already used.
local function dim(tat, rate, units, remaining)
  local T = 1 / rate
  local burst = math.max(units, rate * tau)
  if not tat then tat = now + burst * T end
  if remaining and age and age < tau then
    tat = math.max(tat, now - age + (burst - remaining) * T)
  end
  local horizon = now + burst * T + ahead
  if batch then horizon = now + (1 - share) * burst * T end
  return {tat = tat, inc = units * T, lead = burst * T, horizon = horizon}
end
-- Where a lease of k calls starts in dimension x (nil: it does not fit the horizon). Permit j
-- conforms at s_j = start + (j + 1)·inc − lead and is void after s_j + tau; the worker, doing
-- d calls/s, uses it near now + j/d, so idle credit it could not use in time is skipped.
local function start(x, k)
  local slow = 0
  if d > 0 then slow = math.max(0, 1 / d - x.inc) end
  local s = math.max(x.tat, now - tau + x.lead - x.inc + (k - 1) * slow)
  if s + k * x.inc > x.horizon + 1e-9 then return nil end
  return s
end
local dims = {}
-- A stored state no grant could have left (past an empty bucket plus the longest lease ahead)
-- comes from a clock that stepped back (NTP, a failover to a replica whose clock is behind):
-- kept, it refused every call for the step's length. It is read, and written back, as an
-- empty bucket.
local function stored(field, rate, units)
  local v = num(f[field])
  if not v then return nil end
  local empty = now + math.max(units, rate * tau) / rate
  if v > empty + tau + 1 then
    v = empty
    redis.call('HSET', rk, field, fmt(v))
  end
  return math.max(v, now)
end
if r then dims[#dims + 1] = dim(stored('ra', r, 1), r, 1, num(ARGV[10])) end
if rt then dims[#dims + 1] = dim(stored('ta', rt, per_call), rt, per_call, num(ARGV[11])) end
local fair = want
if r or rt then
  local calls = r or rt / per_call
  if r and rt then calls = math.min(r, rt / per_call) end
  fair = math.max(1, math.floor(calls * (tau + ahead) / active))
end
local function fits(k)
  for _, x in ipairs(dims) do
    if not start(x, k) then return false end
  end
  return true
end
local lo, hi = 0, math.min(want, fair)
while lo < hi do
  local mid = math.floor((lo + hi + 1) / 2)
  if fits(mid) then lo = mid else hi = mid - 1 end
end
local k = lo
local use_first, use_spacing, void_first, void_spacing, wait = 0, 0, 0, 0, 0
if k >= 1 then
  if #dims > 0 then use_first, void_first, void_spacing = -1e9, 1e9, 1e9 end
  for _, x in ipairs(dims) do
    local s = start(x, k)
    local first = s + x.inc - x.lead - now
    use_first, void_first = math.max(use_first, first), math.min(void_first, first)
    use_spacing, void_spacing = math.max(use_spacing, x.inc), math.min(void_spacing, x.inc)
    x.after = s + k * x.inc
  end
  if r then redis.call('HSET', rk, 'ra', fmt(dims[1].after)) end
  if rt then redis.call('HSET', rk, 'ta', fmt(dims[#dims].after)) end
else
  -- Until the head waiter's one permit fits: waiting until a whole fair-share lease fitted
  -- (about 0.5 s at 40/s among four workers) often stalled every worker at once.
  local need = 1
  for _, x in ipairs(dims) do wait = math.max(wait, x.tat + need * x.inc - x.horizon) end
  wait = math.max(wait, 0.001)
  if r and not f.ra then redis.call('HSET', rk, 'ra', fmt(dims[1].tat)) end
  if rt and not f.ta then redis.call('HSET', rk, 'ta', fmt(dims[#dims].tat)) end
end
-- What the provider accepted (the successes the workers report): a throttle's base when the
-- fleet knows no rate of its own.
meter(rk, f, 'sb', 'sn', 'sm', tonumber(ARGV[13]), now)
local over, since_cut, _, acquitted = refusals(rk, f, k, num(ARGV[19], 0), tonumber(ARGV[13]),
                                               now)
local est_f = window(bk, now, tonumber(ARGV[16]), 0, tonumber(ARGV[13]))
local open = open_left(bk, now)
local ttl = tonumber(ARGV[17])
redis.call('PEXPIRE', rk, ttl)
redis.call('PEXPIRE', wk, ttl)
if redis.call('EXISTS', bk) == 1 then redis.call('PEXPIRE', bk, ttl) end
local rate = -1
if r then rate = r elseif rt then rate = rt / per_call end
local paced_tokens = 0
if rt then paced_tokens = 1 end
return {k, fmt(use_first), fmt(use_spacing), fmt(tau), fmt(rate), active, fmt(wait),
        fmt(open), fmt(est_f), paced_tokens, fmt(void_first), fmt(void_spacing), over and 1 or 0,
        fmt(since_cut), fmt(acquitted)}
