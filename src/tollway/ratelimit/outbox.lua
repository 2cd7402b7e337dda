-- Tollway: the outbox helpers of the limiter scripts (tollway/ratelimit/script.py prepends this file to
-- consume.lua and settle.lua; tollway/ratelimit/alerts.py builds the same events in Python).
-- outbox(key, cust, now): the event writer of one call, for the customer `cust` whose outbox stream is
-- `key` (the once-markers and the funding epoch are named from it: same prefix, same hash slot); `now` is
-- the events' `ts`. Defined here, it costs a call that emits nothing one closure; its helpers are built
-- only when it is called (a call with something to announce).
local function outbox(key, cust, now)
  local DAY = 86400000
  local ONCE = 400 * DAY
-- BEGIN rfc3339 (tested against Python: tests/integration/test_limiter_alerts.py)
-- UTC time of epoch milliseconds as RFC 3339 (whole seconds without a fraction), days to civil date by
-- H. Hinnant's algorithm (days since 1970-01-01, any date from 1970 on).
local function rfc3339(ms)
  local s = math.floor(ms / 1000)
  local frac = ms - s * 1000
  local days = math.floor(s / 86400)
  local secs = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local mo = mp + 3
  if mp >= 10 then mo = mp - 9 end
  if mo <= 2 then y = y + 1 end
  local t = string.format('%04d-%02d-%02dT%02d:%02d:%02d', y, mo, d, math.floor(secs / 3600),
    math.floor((secs % 3600) / 60), secs % 60)
  if frac ~= 0 then t = t .. string.format('.%03d', frac) end
  return t .. 'Z'
end
-- END rfc3339
  local esc = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
               ['\b'] = '\\b', ['\f'] = '\\f'}
  -- A JSON string (as Python's json.dumps with ensure_ascii=False).
  local function jstr(text)
    local quoted = string.gsub(text, '[%z\1-\31"\\]', function(c)
      return esc[c] or string.format('\\u%04x', string.byte(c))
    end)
    return '"' .. quoted .. '"'
  end
  -- Micro-units as a decimal string (credits/units.py format_micros).
  local function dec(x)
    if x < 0 then return '-' .. dec(-x) end
    local whole = math.floor(x / 1000000)
    local frac = x - whole * 1000000
    if frac == 0 then return string.format('%d', whole) end
    local text = string.gsub(string.format('%d.%06d', whole, frac), '0+$', '')
    return text
  end
  local prefix = string.sub(key, 1, #key - #cust - 5)
  local base = prefix .. 'evo:{' .. cust .. '}:'
  local o = {appended = 0, jstr = jstr, rfc3339 = rfc3339}
  -- Appends the event `etype` whose id is over "etype|customer|rest" unless its marker exists (`data`
  -- builds the body only then).
  local function emit(etype, rest, ttl, data)
    local id = 'evt_' .. string.sub(redis.sha1hex(etype .. '|' .. cust .. '|' .. rest), 1, 32)
    if not redis.call('SET', base .. id, '1', 'NX', 'PX', string.format('%d', ttl)) then return end
    redis.call('XADD', key, '*', 'id', id, 'type', etype, 'ts', string.format('%d', now),
      'customer', cust, 'data', data())
    o.appended = o.appended + 1
  end
  o.emit = emit
  local epoch = nil
  local function funding()
    epoch = epoch or tonumber(redis.call('GET', prefix .. 'cre:{' .. cust .. '}') or '0')
    return string.format('%d', epoch)
  end
  -- balance.exhausted {balance, price}, once per funding epoch.
  function o.exhausted(unit, balance, price)
    emit('balance.exhausted', funding(), ONCE, function()
      return '{"balance":"' .. dec(balance) .. '","price":"' .. dec(price) .. '","unit":' .. jstr(unit) .. '}'
    end)
  end
  -- A burn of `price` that took the live balance from `before` to `after`: balance.low for each threshold
  -- of `low` it went below (before >= t > after), then balance.exhausted if it reached 0 or below.
  function o.burn(unit, low, before, after, price)
    for _, t in ipairs(low) do
      if before >= t and t > after then
        emit('balance.low', string.format('%d|', t) .. funding(), ONCE, function()
          return '{"balance":"' .. dec(after) .. '","threshold":"' .. dec(t) .. '","unit":' .. jstr(unit) .. '}'
        end)
      end
    end
    if after <= 0 and before > 0 then o.exhausted(unit, after, price) end
  end
  -- spend_cap.reached of the cap `cap` of the period [cps, pe): `spent` before `price`; once per period and
  -- cap amount, the marker kept until a day after the period ends (from `t`, the caller's clock).
  function o.cap(unit, cps, pe, cap, hard, t, spent, price)
    emit('spend_cap.reached', string.format('%d|%d', cps, cap), math.max(pe + DAY - t, DAY), function()
      return '{"cap":"' .. dec(cap) .. '","currency":' .. jstr(unit) .. ',"period_end":' .. jstr(rfc3339(pe)) ..
        ',"period_start":' .. jstr(rfc3339(cps)) .. ',"price":"' .. dec(price) .. '","soft":' ..
        (hard and 'false' or 'true') .. ',"spent":"' .. dec(spent) .. '"}'
    end)
  end
  return o
end
