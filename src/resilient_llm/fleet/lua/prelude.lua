-- Shared by every script but release.lua: helpers over the rate and breaker hashes. The
-- placeholders on the first two lines are filled from resilient_llm.fleet.tuning on loading.
local HEADROOM, BUDGET, TAU_MAX, TAU_UNKNOWN = $headroom, $budget, $tau_max, $tau_unknown
local C3, BETA, FLOOR, ACTIVE, RESERVE = $cubic_c, $cubic_beta, $min_rate, $active, $reserve
local BURST = $burst_seconds
local REFUSAL_WEIGHT, REFUSAL_SHARE, REFUSAL_Z = $refusal_weight, $refusal_share, $refusal_z
local REFUSAL_LEAST, REFUSAL_MEMORY = $refusal_least, $refusal_memory
local TRIAL_SENDS, TRIAL_TIME, TRIAL_DROP = $trial_sends, $trial_time, $trial_drop
local TRIAL_STALE, TRIAL_MARGIN, TRIAL_LAG = $trial_stale, $trial_margin, $trial_lag
local COOLDOWN = $cooldown
local function num(v, d)
  if v == nil or v == false or v == '' then return d end
  return tonumber(v)
end
local function fmt(x) return string.format('%.6f', x) end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fields(key)
  local flat = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
-- The fleet's pace now: request rate r, token rate rt (nil: not learned, unpaced), the lease
-- validity tau, and whether CUBIC is still recovering from a throttle. A throttle is forgotten
-- once CUBIC is back at the headers' rate; without a header rate CUBIC keeps pacing (its rate
-- grows with time: being unpaced again would only buy the next burst of 429s). Once the fleet
-- was throttled (`qb`), the provider's burst is not believed to exceed BURST seconds of the
-- rate, whatever the headers say: a 429 is ground truth, and a per-minute limit may be
-- enforced over much shorter windows.
local function pace(key, f, now)
  local rr, rc, tr, tc = num(f.rr), num(f.rc), num(f.tr), num(f.tc)
  local r = rr and HEADROOM * rr
  local rt = tr and HEADROOM * tr
  local recovering = false
  local ct = num(f.ct)
  if ct and ct > now then
    -- A cut "in the future": Redis' clock stepped back (NTP, a failover to a replica whose
    -- clock is behind). Read as made now, or CUBIC would sit at its floor until then.
    ct = now
    redis.call('HSET', key, 'ct', fmt(now))
  end
  if ct then
    local w = num(f.cw, FLOOR)
    local c = C3 * (now - ct - num(f.ck, 0)) ^ 3 + w
    if (r and c >= r) or (not r and rt and c >= 2 * w) then
      redis.call('HDEL', key, 'ct', 'ck', 'cw')
      f.ct = nil
    else
      c = math.max(c, FLOOR)
      if r and rt then rt = rt * c / r end
      recovering = c < (r or 2 * w)
      r = c
    end
  end
  local tau = TAU_UNKNOWN
  if r then
    rc = rc or math.max(1, r)
    if f.qb then rc = math.min(rc, math.max(1, r * BURST)) end
    tau = math.min(TAU_MAX, math.max(0.05, (BUDGET * rc - 1) / r))
  elseif rt then
    tau = math.min(TAU_MAX, math.max(0.05, 0.5 * BUDGET * tc / rt))
  end
  return r, rt, tau, recovering
end
-- A rate meter in the hash `key` over 0.5 s buckets: fields b_ (bucket start), c_ (count in
-- it), m_ (the rate, an EMA over buckets); adds n at now.
local function meter(key, f, b_, c_, m_, n, now)
  local b = math.floor(now * 2) / 2
  local mb = num(f[b_], 0)
  if b == mb then
    if n > 0 then redis.call('HINCRBY', key, c_, n) end
  else
    local m = num(f[m_], 0)
    if mb > 0 then
      local last = num(f[c_], 0) / math.max(b - mb, 0.5)
      if m > 0 then m = 0.8 * last + 0.2 * m else m = last end
    end
    redis.call('HSET', key, b_, fmt(b), c_, n, m_, fmt(m))
  end
end
-- A fleet cut on trial (engine.refusals.trial_verdict, over the answers the workers report):
-- from TRIAL_LAG after the cut (workers report their answers late), the answers (`tn`) and
-- the 429s among them (`tq`). Refused at any rate, the share stays near 1 - a/s, as at the
-- rate s answered before the cut (`tbs`; `tba` the rate accepted); a limit's falls to
-- 1 - a/r at the trial's rate r. Once TRIAL_SENDS answers or more came at under TRIAL_DROP
-- of s and the two predictions are three standard errors apart, a share nearer the first
-- undoes the cut (forgets CUBIC's state and `lc`) and, for REFUSAL_MEMORY, raises the share
-- that reads as a limit's above the one found (`aq`, `as`; `at`: when); one nearer the
-- second ends the trial. A trial ends saying nothing after 4 TRIAL_SENDS answers still
-- too few to tell, after TRIAL_STALE seconds, or when its cut did not slow the answers.
local function trial(key, f, now)
  local ts = num(f.ts)
  if not ts or now < ts then return end
  local elapsed, n = now - ts, num(f.tn, 0)
  local s, a = num(f.tbs, 0), num(f.tba, 0)
  local rate = n / math.max(elapsed, 1e-9)
  local ended, acquit = false, false
  local after, anyway = 0, 1 - a / math.max(s, 1e-9)
  if elapsed > TRIAL_STALE then
    ended = true
  elseif rate > TRIAL_DROP * s then
    ended = elapsed >= COOLDOWN
  elseif n >= TRIAL_SENDS then
    after = num(f.tq, 0) / n
    local limits = math.max(0, 1 - a / rate)
    local apart = anyway - limits >= 3 * math.sqrt(anyway * (1 - anyway) / n)
    ended = apart or n >= 4 * TRIAL_SENDS
    acquit = apart and after > (anyway + limits) / 2
  end
  if not ended then return end
  redis.call('HDEL', key, 'ts', 'tn', 'tq', 'tbs', 'tba')
  f.ts = nil
  if acquit then
    redis.call('HDEL', key, 'ct', 'ck', 'cw', 'lc')
    f.ct, f.lc = nil, nil
    f.aq, f.as, f.at = fmt(now + REFUSAL_MEMORY), fmt(math.max(after, anyway)), fmt(now)
    redis.call('HSET', key, 'aq', f.aq, 'as', f.as, 'at', f.at)
  end
end
-- Are the fleet's 429s (`refused` more now, among `served` successes and `sent` permits),
-- with confidence, more than REFUSAL_SHARE of its attempts (after an acquittal, TRIAL_MARGIN
-- above the share it found refused at any rate)? Counts of
-- attempts (`qa`: the permits acquire grants, whether used or not, so the share errs low)
-- and of 429s (`qr`, as workers report them), each decayed by REFUSAL_WEIGHT per later
-- permit, and the Wilson score lower bound of qr/qa at REFUSAL_Z from REFUSAL_LEAST answers
-- on (the local RefusalShare's rule, engine.refusals.over_share). Also seconds since a 429
-- last cut the fleet's rate (`lc`; -1: never), whether the fleet's 429s are a rate limit's
-- answers (over the share, or a recent cut), and seconds since a trial found them refused at
-- any rate (-1: never).
local function refusals(key, f, sent, refused, served, now)
  local qa, qr = num(f.qa, 0), num(f.qr, 0)
  if sent > 0 or refused > 0 then
    local keep = (1 - REFUSAL_WEIGHT) ^ sent
    qa, qr = qa * keep + (1 - keep) / REFUSAL_WEIGHT, qr * keep + refused
    f.qa, f.qr = fmt(qa), fmt(qr)
    redis.call('HSET', key, 'qa', f.qa, 'qr', f.qr)
  end
  meter(key, f, 'rb', 'rn', 'rm', refused, now)  -- the 429s' rate: a trial's before its cut
  local ts = num(f.ts)
  if ts and now >= ts and refused + served > 0 then
    f.tn = redis.call('HINCRBY', key, 'tn', refused + served)
    f.tq = redis.call('HINCRBY', key, 'tq', refused)
  end
  trial(key, f, now)
  local share = REFUSAL_SHARE
  if f.aq and now < tonumber(f.aq) then share = math.max(share, num(f.as, 0) + TRIAL_MARGIN) end
  local over = false
  if qa >= REFUSAL_LEAST and qa > 0 then
    local p, z, z2 = math.min(1, qr / qa), REFUSAL_Z, REFUSAL_Z * REFUSAL_Z
    local spread = z * math.sqrt(math.max(0, p * (1 - p)) / qa + z2 / (4 * qa * qa))
    over = (p + z2 / (2 * qa) - spread) / (1 + z2 / qa) > share
  end
  local since, acquitted = -1, -1
  if f.lc then since = math.max(0, now - tonumber(f.lc)) end
  if f.at then acquitted = math.max(0, now - tonumber(f.at)) end
  return over, since, over or (since >= 0 and since < REFUSAL_MEMORY), acquitted
end
-- The fleet's failure window (two buckets of `win` seconds, the older one weighted down):
-- weighted failures and answers, and every answer ever counted (`na`).
local function window(key, now, win, add_fail, add_ok)
  local w = redis.call('HMGET', key, 'fb', 'fc', 'sc', 'pf', 'ps', 'na')
  local fb, fc, sc = num(w[1], now), num(w[2], 0), num(w[3], 0)
  local pf, ps, na = num(w[4], 0), num(w[5], 0), num(w[6], 0)
  local dirty = add_fail > 0 or add_ok > 0
  if now - fb >= win then
    if now - fb < 2 * win then pf, ps = fc, sc else pf, ps = 0, 0 end
    fb, fc, sc, dirty = now, 0, 0, true
  end
  fc, sc, na = fc + add_fail, sc + add_ok, na + add_fail + add_ok
  if dirty then
    redis.call('HSET', key, 'fb', fmt(fb), 'fc', fc, 'sc', sc, 'pf', pf, 'ps', ps, 'na', na)
  end
  if add_ok > 0 then redis.call('HSET', key, 'ls', fmt(now)) end
  local weight = math.max(0, 1 - (now - fb) / win)
  return fc + pf * weight, fc + sc + (pf + ps) * weight, na
end
-- Seconds since a success was last reported to the breaker's window (-1: never).
local function served_ago(key, now)
  local ls = redis.call('HGET', key, 'ls')
  if not ls then return -1 end
  return math.max(0, now - tonumber(ls))
end
local function open_left(key, now)
  local b = redis.call('HMGET', key, 'st', 'ou')
  if b[1] == 'o' then return math.max(0, num(b[2], now) - now) end
  return 0
end
