-- resume: ARGV 3 fence, 4 seller epoch, 5 primary (the master_replid the
-- agent read when it started to reconcile). Ledger.Resume: the region sells
-- again under the new epoch, stamped with this primary's replication id (so
-- a failover stops it again); on another primary, new_primary and nothing
-- changes.
if not fence(tonumber(ARGV[3])) then
  return 'stale_fence'
end
if primary() ~= ARGV[5] then
  return 'new_primary'
end
redis.call('HSET', LEDGER, 'epoch', ARGV[4], 'epoch_primary', ARGV[5], 'halted', '0')
return 'ok'
