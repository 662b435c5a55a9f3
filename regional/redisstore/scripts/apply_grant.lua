-- apply_grant: ARGV 3 fence, 4 granted (cumulative granted_r from etcd).
-- Ledger.ApplyGrant: fence check, then max-merge. Answers {status, granted_seen}.
-- A rise is published on flashsale:grants.
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence', fmt(num(redis.call('HGET', LEDGER, 'granted_seen')))}
end
local granted = tonumber(ARGV[4])
local seen = num(redis.call('HGET', LEDGER, 'granted_seen'))
if granted > seen then
  redis.call('HSET', LEDGER, 'granted_seen', fmt(granted))
  seen = granted
  -- Wakes the region's sellers (GrantsChannel in store.go): buys held for
  -- quota resume now, not at the next counter refresh.
  redis.call('PUBLISH', 'flashsale:grants', SALE)
end
return {'ok', fmt(seen)}
