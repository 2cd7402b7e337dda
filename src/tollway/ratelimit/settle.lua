-- Tollway: settle one reservation exactly once (tollway/ratelimit/reservations.py has the record formats
-- and the rule; tollway/ratelimit/model.py, MemoryLimiter.settle, is the same algorithm in Python).
-- KEYS[1] the customer's reservations hash, KEYS[2] its grants hash, KEYS[3] the spend counter of the
-- reservation's cap period (any key of the customer when it has none), KEYS[4..] the counters of the
-- reserved charges, in the record's order; all with the customer's hash tag.
-- ARGV[1] now_ms (the caller's clock), ARGV[2] the row id, ARGV[3] the actual quantities, in the record's
-- order, separated by spaces.
-- Events (tollway/ratelimit/alerts.py, settlement_events): when the record carries the money alerts of
-- its check (the header's tail `unit cap|-1 hard thresholds|-`), the caller adds one more key, last, the
-- customer's outbox stream, and ARGV[4], the customer; an overrun burned that takes the balance below a
-- balance.low threshold or to 0 or below, or the spend past the cap, appends the same events (same ids,
-- same once-markers, per funding epoch) as a check's burn in consume.lua.
-- Reply: {status (1 settled now, 0 settled before, -1 unknown), final price, given back, overrun burned,
-- forgiven, settled_ms, the request's final price, events appended}. Amounts are integers (micro-units)
-- below 2^53, written through '%d'.
local now = tonumber(ARGV[1])
local row = ARGV[2]
local rec = redis.call('HGET', KEYS[1], row)
if not rec then return {-1, 0, 0, 0, 0, 0, 0, 0} end
if string.sub(rec, 1, 1) == 'S' then
  local p, b, o, f, at, t = string.match(rec, '^S (%-?%d+) (%d+) (%d+) (%d+) (%d+) (%-?%d+)$')
  return {0, tonumber(p), tonumber(b), tonumber(o), tonumber(f), tonumber(at), tonumber(t), 0}
end
local DAY = 86400000
local NOEXP = 2 ^ 62

local lines = {}
for line in string.gmatch(rec, '[^\n]+') do lines[#lines + 1] = line end
local created, overrun, prepaid, cps, cpe, admitted, tail =
  string.match(lines[1], '^R (%d+) (%d+) ([01]) (%-?%d+) (%-?%d+) (%d+) ?(.*)$')
if not created then return redis.error_reply('malformed reservation ' .. row) end
overrun, prepaid, cps, cpe = tonumber(overrun), prepaid == '1', tonumber(cps), tonumber(cpe)
admitted = tonumber(admitted)
local alerts = nil
if tail ~= '' then
  local unit, cap, hard, low = string.match(tail, '^(%S+) (%-?%d+) ([01]) (%S+)$')
  if not unit then return redis.error_reply('malformed reservation ' .. row) end
  alerts = {unit = unit, cap = tonumber(cap), hard = hard == '1', low = {}}
  for t in string.gmatch(low, '%d+') do alerts.low[#alerts.low + 1] = tonumber(t) end
end
local nk, ev = #KEYS, nil
if ARGV[4] then
  ev = {key = KEYS[nk], cust = ARGV[4]}
  nk = nk - 1
end
local actual = {}
for a in string.gmatch(ARGV[3], '%d+') do actual[#actual + 1] = tonumber(a) end
if #actual ~= #lines - 1 or nk ~= #lines + 2 then
  return redis.error_reply('settle: ' .. #actual .. ' quantities and ' .. nk .. ' keys for ' .. (#lines - 1) .. ' charges')
end

-- What the period's invoice charges for quantity q (as consume.lua and credits/charges.py).
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

-- The counters: returns and overruns, charge by charge.
local reserved_price, back, over = 0, 0, 0
for i = 2, #lines do
  local ps, pe, q, price, model, rest = string.match(lines[i], '^%S+ (%d+) (%d+) (%d+) (%d+) (%d) (.+)$')
  if not model then return redis.error_reply('malformed reservation ' .. row) end
  local c = {model = tonumber(model)}
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
  reserved_price = reserved_price + tonumber(price)
  local key = KEYS[i + 2]
  local have = tonumber(redis.call('GET', key) or '0')
  local d = actual[i - 1] - tonumber(q)
  if d < 0 then
    local u = math.min(-d, have)
    if u > 0 then
      redis.call('DECRBY', key, string.format('%d', u))
      back = back + total(c, have) - total(c, have - u)
    end
  elseif d > 0 then
    over = over + total(c, have + d) - total(c, have)
    redis.call('INCRBY', key, string.format('%d', d))
    redis.call('PEXPIRE', key, string.format('%d', math.max(tonumber(pe) - now, 0) + DAY))
  end
end

-- The balance: returns to the refund target, the overrun burned within the allowance, then as debt.
local burned = over
local before, spent_before = nil, nil  -- the balance and the spend after the returns, before the burn
if prepaid and (back > 0 or over > 0) then
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
  local function burn_lt(a, b)
    if a.pri ~= b.pri then return a.pri < b.pri end
    local ea, eb = expiry(a), expiry(b)
    if ea ~= eb then return ea < eb end
    return id_lt(a.id, b.id)
  end
  local function live_in_order(G)
    local L = {}
    for _, g in ipairs(G) do
      if g.eff <= now and (g.exp == 0 or now < g.exp) then L[#L + 1] = g end
    end
    table.sort(L, burn_lt)
    return L
  end
  local G = {}
  local raw = redis.call('HGETALL', KEYS[2])
  for k = 1, #raw, 2 do
    local f = {string.match(raw[k + 1], '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$')}
    if #f ~= 7 then return redis.error_reply('malformed grant record ' .. raw[k]) end
    G[#G + 1] = {id = raw[k], rem = tonumber(f[1]), pri = tonumber(f[2]), eff = tonumber(f[3]), exp = tonumber(f[4]),
                 rmax = tonumber(f[5]), rolled = tonumber(f[6]), forf = tonumber(f[7]), dirty = false}
  end
  if back > 0 then
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
  if over > 0 then
    local L = live_in_order(G)
    local balance = 0
    for _, g in ipairs(L) do balance = balance + g.rem end
    burned = math.min(over, math.max(balance + overrun, 0))
    before = balance
    local left = burned
    for _, g in ipairs(L) do
      if left <= 0 then break end
      local part = math.min(g.rem, left)
      if part > 0 then g.rem, g.dirty, left = g.rem - part, true, left - part end
    end
    if left > 0 then
      local debt = nil
      for _, g in ipairs(G) do if g.id == 'debt' then debt = g end end
      if not debt then
        debt = {id = 'debt', rem = 0, pri = -1, eff = 0, exp = 0, rmax = -1, rolled = 0, forf = 0}
        G[#G + 1] = debt
      end
      debt.rem, debt.dirty = debt.rem - left, true
    end
  end
  for _, g in ipairs(G) do
    if g.dirty then
      redis.call('HSET', KEYS[2], g.id,
        string.format('%d %d %d %d %d %d %d', g.rem, g.pri, g.eff, g.exp, g.rmax, g.rolled, g.forf))
    end
  end
end
local forgiven = over - burned

-- The spend counter of the cap period (if the check had a cap): returns off it, the overrun on it.
if cps >= 0 and (back > 0 or burned > 0) then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  local net = burned - math.min(back, spent)
  spent_before = spent - math.min(back, spent)
  if net ~= 0 then redis.call('INCRBY', KEYS[3], string.format('%d', net)) end
  if burned > 0 then redis.call('PEXPIRE', KEYS[3], string.format('%d', math.max(cpe - now, 0) + DAY)) end
end

local price = reserved_price - back + burned
local final = admitted - back + burned
redis.call('HSET', KEYS[1], row, string.format('S %d %d %d %d %d %d', price, back, burned, forgiven, now, final))

-- Events: the overrun burned is a burn like a check's price (returns cross nothing downward and re-arm
-- nothing: the once-markers are per funding epoch, and only a grant or top-up bumps it).
local appended = 0
if ev and alerts and burned > 0 then
  local mon, after = false, nil
  if before then
    after = before - burned
    mon = after <= 0 and before > 0
    for _, t in ipairs(alerts.low) do
      if before >= t and t > after then mon = true end
    end
  end
  local capped = alerts.cap >= 0 and spent_before ~= nil and spent_before + burned > alerts.cap
  if mon or capped then
    local o = outbox(ev.key, ev.cust, now)
    if mon then o.burn(alerts.unit, alerts.low, before, after, burned) end
    if capped then o.cap(alerts.unit, cps, cpe, alerts.cap, alerts.hard, now, spent_before, burned) end
    appended = o.appended
  end
end
return {1, price, back, burned, forgiven, now, final, appended}
