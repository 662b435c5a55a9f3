-- raise_floor: ARGV 3 fence, 4 released_local, 5 sold. Ledger.RaiseFloor:
-- after lost writes, raise both counters to what etcd or the order store
-- know; never lower them.
if not fence(tonumber(ARGV[3])) then
  return 'stale_fence'
end
local l = redis.call('HMGET', LEDGER, 'released_local', 'sold')
local rl, sold = tonumber(ARGV[4]), tonumber(ARGV[5])
if rl > num(l[1]) then
  redis.call('HSET', LEDGER, 'released_local', fmt(rl))
end
if sold > num(l[2]) then
  redis.call('HSET', LEDGER, 'sold', fmt(sold))
end
return 'ok'
