-- expire: ARGV 3 now (ms), 4 limit. Ledger.Expire: at most limit active
-- reservations due by now, in (expiresAt, id as bytes) order, each once;
-- none while the region is stopped.
local now, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
if limit <= 0 then
  return out
end
-- Nothing expires while the region is stopped (Ledger.Expire): on a
-- primary its agent has not reconciled, a reservation the lost writes had
-- confirmed may still look active here, and expiring it would hand its
-- unit back to stock before the agent restores the sale from the order
-- store. Buyers cannot confirm meanwhile either (confirm.lua).
if ledger_stopped() then
  return out
end
local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', ARGV[3], 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local r = redis.call('HMGET', resv_key(id), 'user', 'req', 'state')
  if r[3] == 'active' then
    finish(id, r[1], r[2], 'expired', now)
    out[#out + 1] = id
  else
    -- Only active reservations belong in the expiry set; drop a stray.
    redis.call('ZREM', EXPIRY, id)
  end
end
return out
