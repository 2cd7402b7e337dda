-- Tollway: check and consume every policy of one request, all or nothing (tollway/ratelimit/model.py
-- is the same algorithm in Python; docs/decisions/0003-sliding-window-limits.md explains it).
-- KEYS: one counter per policy, all with the hash tag {<partition>}.
-- ARGV[1] = now_ms; then one ARGV per policy, 6 numbers separated by spaces (one argument instead of six
-- halves the client's encoding work): kind (0 window, 1 quota), limit, cost, enforced (0/1), then
--   window: bucket_ms buckets      quota: period_end_ms 0
-- Reply: {admitted, then per policy: total before, reset_ms, retry_ms}; -1 = never fits.
local now = tonumber(ARGV[1])
local n = #KEYS
local P = {}
local admit = 1

for i = 1, n do
  local kind, limit, cost, enf, a, b = string.match(ARGV[i + 1], '^(%d+) (%d+) (%d+) (%d) (%d+) (%d+)$')
  kind, limit, cost, enf, a, b = tonumber(kind), tonumber(limit), tonumber(cost), enf == '1', tonumber(a), tonumber(b)
  local total, live, stale, cur = 0, nil, nil, 0
  if kind == 0 then
    cur = math.floor(now / a)
    local lo, hi = cur - b, cur + b
    live, stale = {}, {}
    local raw = redis.call('HGETALL', KEYS[i])
    for j = 1, #raw, 2 do
      local idx = tonumber(raw[j])
      if idx >= lo and idx <= hi then
        local c = tonumber(raw[j + 1])
        live[idx] = c
        total = total + c
      else
        stale[#stale + 1] = raw[j]
      end
    end
  else
    total = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if enf and cost > 0 and total + cost > limit then admit = 0 end
  P[i] = {kind, limit, cost, enf, a, b, total, live, stale, cur}
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
        local cur = p[10]
        redis.call('HINCRBY', KEYS[i], string.format('%d', cur), cost)
        if #p[9] > 0 then redis.call('HDEL', KEYS[i], unpack(p[9])) end
        redis.call('PEXPIRE', KEYS[i], (p[6] + 1) * p[5])
        p[8][cur] = (p[8][cur] or 0) + cost
      else
        redis.call('INCRBY', KEYS[i], cost)
        redis.call('PEXPIRE', KEYS[i], math.max(p[5] - now, 0) + 86400000)
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
  if kind == 0 then
    reset = free(p[8], after, 1, limit, p[5], p[6])
  else
    reset = math.max(p[5] - now, 0)
  end
  if admit == 0 and p[4] and cost > 0 and total + cost > limit then
    if cost > limit then
      retry = -1
    elseif kind == 0 then
      retry = free(p[8], total, cost, limit, p[5], p[6])
    else
      retry = math.max(p[5] - now, 0)
    end
  end
  out[3 * i - 1] = total
  out[3 * i] = reset
  out[3 * i + 1] = retry
end
return out
