-- resume: ARGV 3 fence, 4 seller epoch, 5 primary (the master_replid the
-- agent read when it started to reconcile), 6 granted. Ledger.Resume: the
-- region sells again under the new epoch, stamped with this primary's
-- replication id (so a failover stops it again), and granted is max-merged
-- as apply_grant does; on another primary, new_primary and nothing changes.
-- Answers {status, granted_seen}.
local function seen()
  return num(redis.call('HGET', LEDGER, 'granted_seen'))
end
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence', fmt(seen())}
end
if primary() ~= ARGV[5] then
  return {'new_primary', fmt(seen())}
end
redis.call('HSET', LEDGER, 'epoch', ARGV[4], 'epoch_primary', ARGV[5], 'halted', '0')
local granted, gs = tonumber(ARGV[6]), seen()
if granted > gs then
  redis.call('HSET', LEDGER, 'granted_seen', fmt(granted))
  gs = granted
end
-- Wakes the region's sellers, as apply_grant does: they sell again now.
redis.call('PUBLISH', 'flashsale:grants', SALE)
return {'ok', fmt(gs)}
