-- Tollway: check and consume every policy of one request, all or nothing (tollway/ratelimit/model.py
-- is the same algorithm in Python; docs/decisions/0003-sliding-window-limits.md explains it).
-- KEYS: one counter per policy, all with the hash tag {<partition>}.
-- ARGV[1] = the caller's now_ms: the clock of quota periods (the caller chose the period, on the clock that
-- also dates its usage rows). ARGV[2] = the time of the window buckets: empty for this server's clock
-- (TIME: the one clock every Tollway process shares; on a cluster one customer's keys share a slot, so
-- one clock), or a number (tests that drive time). Then one ARGV per policy, 6 numbers separated by
-- spaces (one argument instead of six halves the client's encoding work): kind (0 window, 1 quota),
-- limit, cost, enforced (0/1), then
--   window: bucket_ms buckets      quota: period_end_ms 0
-- Optionally two more numbers per policy, a refund applied before the check: `units bucket` — the unused
-- units of a capacity lease go back to window bucket `bucket` (the one they were consumed in, if still
-- tracked) or to the quota counter; never below zero (tollway/ratelimit/leases.py).
-- Then, optionally, the money arguments (kinds 2 charge, 3 balance, 4 spend cap, 5 reservation;
-- tollway/ratelimit/money.py has their format and semantics, tollway/ratelimit/model.py the same algorithm in
-- Python), each with its key; a money argument starts with 2-5, a policy's with 0-1, so they are counted from
-- the end.
-- Reply: {admitted, then per policy: total before, reset_ms, retry_ms; per money argument its 3 numbers;
-- then the window time used}; -1 = never fits. TIME in a script is allowed since scripts replicate their
-- effects (Redis 5+, Valkey). Money amounts are integers (micro-units) below 2^53: exact in Lua's doubles,
-- and passed to Redis through '%d', never as a float's text.
local qnow = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local n = #KEYS
-- Alerts (tollway/ratelimit/alerts.py): only a check with alerting policies or money alerts has more
-- ARGV than KEYS + 2; then its last key is the customer's outbox stream, with the argument
-- `6 plan feature customer`, followed (no keys) by the money alerts `8 unit cap_start thresholds` and one
-- argument `7 position period_start level:label,... name` per alerting policy.
local ev = nil
if #ARGV > n + 2 then
  ev = {key = KEYS[n], first = n + 3, appended = 0}
  ev.plan, ev.feature, ev.cust = string.match(ARGV[n + 2], '^6 (%S+) (%S+) (.+)$')
  if string.byte(ARGV[n + 3], 1) == 56 then
    local unit, cps, low = string.match(ARGV[n + 3], '^8 (%S+) (%-?%d+) (%S+)$')
    ev.mon = {unit = unit, cps = tonumber(cps), low = {}, spec = low}
    for t in string.gmatch(low, '%d+') do ev.mon.low[#ev.mon.low + 1] = tonumber(t) end
    ev.first = n + 4
  end
  n = n - 1
end
local m = 0
while m < n and string.byte(ARGV[n - m + 2], 1) > 49 do m = m + 1 end
n = n - m
local P = {}
local admit = 1

-- A capacity lease's record (kind 9, `9 <take id|-> <close id|->`, key {p}ls:{<partition>}; money.py):
-- the refund this call carries is applied only if it closes a record still there (HDEL 1), so a refund
-- sent again after a lost reply, or for a lease whose take was never counted, gives nothing back twice.
local lease, norefund = nil, false
for j = n + 1, n + m do
  if string.byte(ARGV[j + 2], 1) == 57 then
    local take, close = string.match(ARGV[j + 2], '^9 (%S+) (%S+)$')
    if not close then return redis.error_reply('bad lease argument ' .. ARGV[j + 2]) end
    lease = {j = j, take = take, closed = 0, taken = 0}
    if close ~= '-' then
      lease.closed = redis.call('HDEL', KEYS[j], close)
      norefund = lease.closed == 0
    end
  end
end

-- A window hash keeps, besides `bucket index -> units`, a running total `t` of the buckets from index `o`
-- up: a check reads two fields and drops only the buckets that left the window since the last check
-- (each bucket is dropped once), instead of reading the whole ring. The per-bucket counts are read only
-- when a policy is at its limit, to compute when capacity frees up.
local function live_buckets(key, lo, hi)
  local live = {}
  local raw = redis.call('HGETALL', key)
  for j = 1, #raw, 2 do
    local idx = tonumber(raw[j])
    if idx and idx >= lo and idx <= hi then live[idx] = tonumber(raw[j + 1]) end
  end
  return live
end

local function refund(key, kind, units, bucket)
  if kind == 0 then
    local tv = redis.call('HMGET', key, bucket, 'o')
    local have, o = tonumber(tv[1]), tonumber(tv[2])
    if have and o and tonumber(bucket) >= o then
      local back = math.min(units, have)
      if back > 0 then
        redis.call('HINCRBY', key, bucket, -back)
        redis.call('HINCRBY', key, 't', -back)
      end
    end
  else
    local back = math.min(units, tonumber(redis.call('GET', key) or '0'))
    if back > 0 then redis.call('DECRBY', key, back) end
  end
end

for i = 1, n do
  local kind, limit, cost, enf, a, b, ru, rb =
    string.match(ARGV[i + 2], '^(%d+) (%d+) (%d+) (%d) (%d+) (%d+) ?(%d*) ?(%d*)$')
  kind, limit, cost, enf, a, b = tonumber(kind), tonumber(limit), tonumber(cost), enf == '1', tonumber(a), tonumber(b)
  if not norefund and ru ~= '' and tonumber(ru) > 0 then refund(KEYS[i], kind, tonumber(ru), rb) end
  local total, cur, lo, moved = 0, 0, 0, false
  if kind == 0 then
    cur = math.floor(now / a)
    lo = cur - b
    local tv = redis.call('HMGET', KEYS[i], 't', 'o')
    local t, o = tonumber(tv[1]), tonumber(tv[2])
    if t == nil or o == nil then
      t, o = 0, lo
      moved = true
    elseif o < lo then
      if lo - o > b + 1 then
        -- Idle for longer than the ring: everything counted has left the window.
        redis.call('DEL', KEYS[i])
        t = 0
      else
        local gone = {}
        for idx = o, lo - 1 do gone[#gone + 1] = string.format('%d', idx) end
        local counts = redis.call('HMGET', KEYS[i], unpack(gone))
        for j = 1, #counts do t = t - (tonumber(counts[j]) or 0) end
        redis.call('HDEL', KEYS[i], unpack(gone))
      end
      o = lo
      moved = true
    end
    total = t
    if moved then redis.call('HSET', KEYS[i], 't', t, 'o', o) end
  else
    total = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if enf and cost > 0 and total + cost > limit then admit = 0 end
  P[i] = {kind, limit, cost, enf, a, b, total, nil, nil, cur, lo}
end

-- Money: refunds of charge units, rollovers, the price, the balance and the cap (kept out of the way of
-- a check without money: nothing here runs then).
local money = nil
if m > 0 then
  local DAY = 86400000
  local NOEXP = 2 ^ 62

  -- What the period's invoice charges for quantity q (credits/charges.py, RealTimeCharge.total).
  local function total(c, q)
    if q <= 0 then return 0 end
    if c.model == 0 then return q * c.unit end
    if c.model == 1 then
      local amount, lower = 0, 0
      for _, t in ipairs(c.tiers) do
        if q <= lower then break end
        local upper = q
        if t[1] > 0 and t[1] < q then upper = t[1] end
        amount = amount + (upper - lower) * t[2] + t[3]
        if t[1] == 0 then break end
        lower = t[1]
      end
      return amount
    end
    local billable = math.max(q - c.free, 0)
    local whole = math.floor(billable / c.size)
    while whole * c.size > billable do whole = whole - 1 end
    while (whole + 1) * c.size <= billable do whole = whole + 1 end
    if c.up and whole * c.size < billable then whole = whole + 1 end
    return whole * c.pkg
  end

  -- Grant ids compare byte by byte (as Python's str for these ASCII ids; Lua's `<` follows the locale).
  local function id_lt(a, b)
    for k = 1, math.min(#a, #b) do
      local x, y = string.byte(a, k), string.byte(b, k)
      if x ~= y then return x < y end
    end
    return #a < #b
  end
  local function expiry(g)
    if g.exp == 0 then return NOEXP end
    return g.exp
  end
  -- Burn order (credits/grants.py): priority, then earliest expiry (none last), then grant id.
  local function burn_lt(a, b)
    if a.pri ~= b.pri then return a.pri < b.pri end
    local ea, eb = expiry(a), expiry(b)
    if ea ~= eb then return ea < eb end
    return id_lt(a.id, b.id)
  end
  local function live_in_order(G)
    local L = {}
    for _, g in ipairs(G) do
      if g.eff <= qnow and (g.exp == 0 or qnow < g.exp) then L[#L + 1] = g end
    end
    table.sort(L, burn_lt)
    return L
  end

  local C, bal, cap, rsv = {}, nil, nil, nil
  for j = n + 1, n + m do
    local arg = ARGV[j + 2]
    local kind = string.byte(arg, 1)
    if kind == 50 then
      local body, r = string.match(arg, '^(.-) r(%d+)$')
      if not body then body, r = arg, '0' end
      local q, pe, model, rest = string.match(body, '^2 (%d+) (%d+) (%d) (.+)$')
      if not rest then return redis.error_reply('bad charge argument ' .. arg) end
      local c = {j = j, q = tonumber(q), pe = tonumber(pe), model = tonumber(model), r = norefund and 0 or tonumber(r)}
      if c.model == 0 then
        c.unit = tonumber(rest)
      elseif c.model == 1 then
        c.tiers = {}
        for up, unit, flat in string.gmatch(rest, '(%d+):(%d+):(%d+)') do
          c.tiers[#c.tiers + 1] = {tonumber(up), tonumber(unit), tonumber(flat)}
        end
      else
        local size, pkg, free_units, up = string.match(rest, '^(%d+) (%d+) (%d+) (%d)$')
        c.size, c.pkg, c.free, c.up = tonumber(size), tonumber(pkg), tonumber(free_units), up == '1'
      end
      C[#C + 1] = c
    elseif kind == 51 then
      local ps, floor = string.match(arg, '^3 (%d+) ?(%d*)$')
      bal = {j = j, ps = tonumber(ps), floor = tonumber(floor) or 0}
    elseif kind == 57 then
      -- the lease record: read before the policies (above), written after the check (below)
    elseif kind == 53 then
      local row, over, cps, pos = string.match(arg, '^5 (%S+) (%d+) (%-?%d+) ([%d,]+)$')
      if not pos or redis.call('HEXISTS', KEYS[j], row) == 1 then return redis.error_reply('bad reservation ' .. arg) end
      rsv = {j = j, row = row, over = over, cps = cps, pos = pos}
    else
      local limit, hard, pe = string.match(arg, '^4 (%d+) (%d) (%d+)$')
      cap = {j = j, cap = tonumber(limit), hard = hard == '1', pe = tonumber(pe)}
    end
  end

  -- Grants, with the rollover at the balance's period start applied (and kept: it is idempotent).
  local G = nil
  if bal then
    G = {}
    local raw = redis.call('HGETALL', KEYS[bal.j])
    for k = 1, #raw, 2 do
      local f = {string.match(raw[k + 1], '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$')}
      if #f ~= 7 then return redis.error_reply('malformed grant record ' .. raw[k]) end
      local g = {id = raw[k], rem = tonumber(f[1]), pri = tonumber(f[2]), eff = tonumber(f[3]), exp = tonumber(f[4]),
                 rmax = tonumber(f[5]), rolled = tonumber(f[6]), forf = tonumber(f[7]), dirty = false}
      if g.rmax >= 0 and g.eff < bal.ps and g.rolled < bal.ps then
        local cut = math.max(g.rem - g.rmax, 0)
        g.rem, g.rolled, g.forf, g.dirty = g.rem - cut, bal.ps, g.forf + cut, true
      end
      G[#G + 1] = g
    end
  end

  -- Refunds: the top positions of each counter, and their price.
  local back = 0
  for _, c in ipairs(C) do
    local have = tonumber(redis.call('GET', KEYS[c.j]) or '0')
    if c.r > 0 and have > 0 then
      local u = math.min(c.r, have)
      redis.call('DECRBY', KEYS[c.j], string.format('%d', u))
      back = back + total(c, have) - total(c, have - u)
      have = have - u
    end
    c.before = have
  end
  if back > 0 and G then
    local target = live_in_order(G)[1]
    if not target then
      for _, g in ipairs(G) do
        if not target then
          target = g
        else
          local gn, tn = g.exp == 0, target.exp == 0
          if (gn and not tn) or (gn == tn and (g.exp > target.exp or (g.exp == target.exp and id_lt(target.id, g.id)))) then
            target = g
          end
        end
      end
    end
    if target then
      target.rem, target.dirty = target.rem + back, true
    else
      G[#G + 1] = {id = 'returned', rem = back, pri = 0, eff = 0, exp = 0, rmax = -1, rolled = 0, forf = 0, dirty = true}
    end
  end
  local spent = 0
  if cap then
    spent = tonumber(redis.call('GET', KEYS[cap.j]) or '0')
    if back > 0 and spent > 0 then
      local u = math.min(back, spent)
      redis.call('DECRBY', KEYS[cap.j], string.format('%d', u))
      spent = spent - u
    end
  end

  -- The check: the marginal price at each counter, against the live balance and a hard cap.
  local price = 0
  for _, c in ipairs(C) do
    c.price = 0
    if c.q > 0 then c.price = total(c, c.before + c.q) - total(c, c.before) end
    price = price + c.price
  end
  local L, balance = nil, 0
  if G then
    L = live_in_order(G)
    for _, g in ipairs(L) do balance = balance + g.rem end
  end
  local fit = admit
  if price > 0 and ((G and balance - price < bal.floor) or (cap and cap.hard and spent + price > cap.cap)) then
    admit = 0
  end
  local burned = 0
  if admit == 1 then
    for _, c in ipairs(C) do
      if c.q > 0 then
        redis.call('INCRBY', KEYS[c.j], string.format('%d', c.q))
        redis.call('PEXPIRE', KEYS[c.j], string.format('%d', math.max(c.pe - qnow, 0) + DAY))
      end
    end
    if price > 0 then
      if L then
        local left = price
        for _, g in ipairs(L) do
          if left <= 0 then break end
          local part = math.min(g.rem, left)
          if part > 0 then
            g.rem, g.dirty, left = g.rem - part, true, left - part
          end
        end
        burned = price
      end
      if cap then
        redis.call('INCRBY', KEYS[cap.j], string.format('%d', price))
        redis.call('PEXPIRE', KEYS[cap.j], string.format('%d', math.max(cap.pe - qnow, 0) + DAY))
      end
    end
  end
  if G then
    for _, g in ipairs(G) do
      if g.dirty then
        redis.call('HSET', KEYS[bal.j], g.id,
          string.format('%d %d %d %d %d %d %d', g.rem, g.pri, g.eff, g.exp, g.rmax, g.rolled, g.forf))
      end
    end
  end
  -- A reservation (ratelimit/reservations.py): the reserved charges' quantities and prices, keyed by row id.
  if rsv and admit == 1 then
    local head = string.format('R %d %s %d %s %s %d', qnow, rsv.over, bal and 1 or 0, rsv.cps,
      cap and string.format('%d', cap.pe) or '-1', price)
    if ev and ev.mon then
      -- The money alerts, for the events of its settlement (settle.lua): unit, cap, hard, thresholds.
      head = head .. string.format(' %s %s %d %s', ev.mon.unit, cap and string.format('%d', cap.cap) or '-1',
        (cap and cap.hard) and 1 or 0, ev.mon.spec)
    end
    local lines = {head}
    rsv.price = 0
    for p in string.gmatch(rsv.pos, '%d+') do
      local c = C[tonumber(p)]
      local name, ps = string.match(KEYS[c.j], ':([^:]+):(%d+)$')
      local body = string.match(string.match(ARGV[c.j + 2], '^(.-) r%d+$') or ARGV[c.j + 2], '^2 %d+ %d+ (.+)$')
      lines[#lines + 1] = string.format('%s %s %d %d %d %s', name, ps, c.pe, c.q, c.price, body)
      rsv.price = rsv.price + c.price
    end
    redis.call('HSET', KEYS[rsv.j], rsv.row, table.concat(lines, '\n'))
  end
  money = {C = C, bal = bal, cap = cap, rsv = rsv, balance = balance, spent = spent, price = price, burned = burned,
           fit = fit}
end

-- Milliseconds until `need` more units fit: the oldest counted buckets leave one by one, bucket idx at
-- (idx + buckets + 1) * bucket_ms.
local function free(live, total, need, limit, g, nb)
  if total + need <= limit then return 0 end
  if need > limit then return -1 end
  local idxs = {}
  for idx in pairs(live) do idxs[#idxs + 1] = idx end
  table.sort(idxs)
  local freed, at = 0, now
  for _, idx in ipairs(idxs) do
    freed = freed + live[idx]
    at = (idx + nb + 1) * g
    if total - freed + need <= limit then break end
  end
  return at - now
end

if admit == 1 then
  for i = 1, n do
    local p = P[i]
    local cost = p[3]
    if cost > 0 then
      if p[1] == 0 then
        redis.call('HINCRBY', KEYS[i], string.format('%d', p[10]), cost)
        redis.call('HINCRBY', KEYS[i], 't', cost)
        redis.call('PEXPIRE', KEYS[i], (p[6] + 1) * p[5])
      else
        redis.call('INCRBY', KEYS[i], cost)
        redis.call('PEXPIRE', KEYS[i], math.max(p[5] - qnow, 0) + 86400000)
      end
    end
  end
end


-- Events (tollway/ratelimit/alerts.py): each level an admitted check made a policy's count cross
-- (before < level <= after), then the money events, each one outbox entry, once (the once-marker SET NX,
-- kept until a day after its period ends; a balance's for ONCE_TTL_MS), written by `outbox` (outbox.lua,
-- which script.py prepends to this script and to settle.lua).
local cross = nil
if ev and admit == 1 then
  -- First the levels crossed (most checks cross none: nothing more is built for them).
  for j = ev.first, #ARGV do
    local i, ps, specs, name = string.match(ARGV[j], '^7 (%d+) (%d+) (%S+) (.+)$')
    local p = P[tonumber(i)]
    local before, after = p[7], p[7] + p[3]
    if after > before then
      for lvl, label in string.gmatch(specs, '(%d+):([^,]+)') do
        local level = tonumber(lvl)
        if before < level and level <= after then
          cross = cross or {}
          cross[#cross + 1] = {p, tonumber(ps), name, level, label, after}
        end
      end
    end
  end
end
-- Whether a money event may fire (most checks of a prepaid plan: none, and nothing more is built for them).
local mon = false
if ev and ev.mon and money and money.fit == 1 and money.price > 0 then
  local price, before, b, cap = money.price, money.balance, money.bal, money.cap
  if b then
    if admit == 1 then
      local after = before - price
      mon = after <= 0 and before > 0
      for _, t in ipairs(ev.mon.low) do
        if before >= t and t > after then mon = true end
      end
    else
      mon = before < price
    end
  end
  if cap and money.spent + price > cap.cap then mon = true end
end
if cross or mon then
  local DAY = 86400000
  local o = outbox(ev.key, ev.cust, now)
  if cross then
    local jstr, rfc3339 = o.jstr, o.rfc3339
    local head = '{"feature":' .. jstr(ev.feature) .. ',"limit":'
    local plan = jstr(ev.plan)
    for _, c in ipairs(cross) do
      local p, name, level, label, after = c[1], c[3], c[4], c[5], c[6]
      local etype, start, finish, ttl
      if p[1] == 0 then
        local w = p[5] * p[6]
        start = now - now % w
        finish = start + w
        etype = 'limit.threshold_crossed'
        ttl = math.max(finish + DAY - now, DAY)
      else
        start, finish = c[2], p[5]
        etype = 'quota.threshold_crossed'
        ttl = math.max(finish + DAY - qnow, DAY)
      end
      o.emit(etype, string.format('%s|%d|%d', name, start, level), ttl, function()
        return head .. string.format('%d', p[2]) .. ',"period_end":' .. jstr(rfc3339(finish)) ..
          ',"period_start":' .. jstr(rfc3339(start)) .. ',"plan":' .. plan .. ',"policy":' .. jstr(name) ..
          ',"threshold":' .. string.format('%d', level) .. ',"threshold_label":' .. jstr(label) ..
          ',"used":' .. string.format('%d', after) .. '}'
      end)
    end
  end
  if mon then
    local price, before, unit = money.price, money.balance, ev.mon.unit
    if money.bal then
      if admit == 1 then
        o.burn(unit, ev.mon.low, before, before - price, price)
      elseif before < price then
        o.exhausted(unit, before, price)
      end
    end
    local cap = money.cap
    if cap and money.spent + price > cap.cap and ((cap.hard and admit == 0 and
        not (money.bal and before - price < money.bal.floor))
        or (not cap.hard and admit == 1)) then
      o.cap(unit, ev.mon.cps, cap.pe, cap.cap, cap.hard, qnow, money.spent, price)
    end
  end
  ev.appended = o.appended
end

local out = {admit}
for i = 1, n do
  local p = P[i]
  local kind, limit, cost, total = p[1], p[2], p[3], p[7]
  local after = total
  if admit == 1 then after = total + cost end
  local reset, retry = 0, 0
  local live = nil
  if kind == 0 and after + 1 > limit then
    live = live_buckets(KEYS[i], p[11], p[10] + p[6])
    reset = free(live, after, 1, limit, p[5], p[6])
  elseif kind == 0 then
    reset = 0
  else
    reset = math.max(p[5] - qnow, 0)
  end
  if admit == 0 and p[4] and cost > 0 and total + cost > limit then
    if cost > limit then
      retry = -1
    elseif kind == 0 then
      -- Refused: nothing was written, so the buckets read are the ones counted in `total`.
      live = live or live_buckets(KEYS[i], p[11], p[10] + p[6])
      retry = free(live, total, cost, limit, p[5], p[6])
    else
      retry = math.max(p[5] - qnow, 0)
    end
  end
  out[3 * i - 1] = total
  out[3 * i] = reset
  out[3 * i + 1] = retry
end
if money then
  for _, c in ipairs(money.C) do
    out[3 * c.j - 1], out[3 * c.j], out[3 * c.j + 1] = c.before, c.price, 0
  end
  local b, c = money.bal, money.cap
  if b then out[3 * b.j - 1], out[3 * b.j], out[3 * b.j + 1] = money.balance, money.burned, 0 end
  if c then out[3 * c.j - 1], out[3 * c.j], out[3 * c.j + 1] = money.spent, money.price, 0 end
  local r = money.rsv
  if r then out[3 * r.j - 1], out[3 * r.j], out[3 * r.j + 1] = admit, r.price or 0, 0 end
end
if lease then
  if lease.take ~= '-' and admit == 1 then
    redis.call('HSET', KEYS[lease.j], lease.take, string.format('%d', qnow))
    redis.call('PEXPIRE', KEYS[lease.j], 86400000)
    lease.taken = 1
  end
  out[3 * lease.j - 1], out[3 * lease.j], out[3 * lease.j + 1] = lease.closed, lease.taken, 0
end
if ev then
  out[3 * (n + m) + 2], out[3 * (n + m) + 3], out[3 * (n + m) + 4] = ev.appended, 0, 0
end
out[3 * #KEYS + 2] = now
return out
