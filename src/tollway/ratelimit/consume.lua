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
-- Reply: {admitted, then per policy: total before, reset_ms, retry_ms; then the window time used}; -1 =
-- never fits. TIME in a script is allowed since scripts replicate their effects (Redis 5+, Valkey).
local qnow = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local n = #KEYS
local P = {}
local admit = 1

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
  if ru ~= '' and tonumber(ru) > 0 then refund(KEYS[i], kind, tonumber(ru), rb) end
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
out[3 * n + 2] = now
return out
