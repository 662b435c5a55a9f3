-- set_halted: ARGV 3 fence, 4 halted (0 or 1). Ledger.SetHalted.
if not fence(tonumber(ARGV[3])) then
  return 'stale_fence'
end
redis.call('HSET', LEDGER, 'halted', ARGV[4])
return 'ok'
