-- resume: ARGV 3 fence, 4 seller epoch. Ledger.Resume: the agent reconciled
-- this primary; the region sells again under the new epoch, stamped with
-- this primary's replication id (so a failover stops it again).
if not fence(tonumber(ARGV[3])) then
  return 'stale_fence'
end
redis.call('HSET', LEDGER, 'epoch', ARGV[4], 'epoch_primary', primary(), 'halted', '0')
return 'ok'
