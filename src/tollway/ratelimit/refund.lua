-- Tollway: give back the unused units of a capacity lease (tollway/ratelimit/leases.py), all policies of
-- one lease at once. The model is MemoryLimiter.refund (tollway/ratelimit/model.py).
-- KEYS: one counter per policy (hash tag {<partition>}). ARGV[i]: "kind units bucket" — kind 0 (window):
-- `units` go back to bucket index `bucket`, the bucket the lease was taken in, if it is still tracked;
-- kind 1 (quota): `units` go back to the period's counter. Never below zero. Reply: {1}.
for i = 1, #KEYS do
  local kind, units, bucket = string.match(ARGV[i], '^(%d+) (%d+) (%d+)$')
  kind, units = tonumber(kind), tonumber(units)
  if units and units > 0 then
    if kind == 0 then
      local tv = redis.call('HMGET', KEYS[i], bucket, 'o')
      local have, o = tonumber(tv[1]), tonumber(tv[2])
      if have and o and tonumber(bucket) >= o then
        local back = math.min(units, have)
        if back > 0 then
          redis.call('HINCRBY', KEYS[i], bucket, -back)
          redis.call('HINCRBY', KEYS[i], 't', -back)
        end
      end
    else
      local have = tonumber(redis.call('GET', KEYS[i]) or '0')
      local back = math.min(units, have)
      if back > 0 then redis.call('DECRBY', KEYS[i], back) end
    end
  end
end
return {1}
