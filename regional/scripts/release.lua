-- release: ARGV 3 fence, 4 release id, 5 k. Ledger.Release: m = min(k,
-- available), recorded per id so a repeat returns the same m and changes
-- nothing. Answers {status, m, released_local}.
local k = tonumber(ARGV[5])
local function rl()
  return fmt(num(redis.call('HGET', LEDGER, 'released_local')))
end
if k < 0 then
  return {'negative', '0', rl()}
end
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence', '0', rl()}
end
local got = redis.call('HGET', RELEASES, ARGV[4])
if got then
  return {'ok', got, rl()}
end
local m = math.min(k, available())
local total = redis.call('HINCRBY', LEDGER, 'released_local', m)
redis.call('HSET', RELEASES, ARGV[4], fmt(m))
return {'ok', fmt(m), fmt(total)}
