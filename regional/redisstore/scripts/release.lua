-- release: ARGV 3 fence, 4 release id, 5 k, 6 keep. Ledger.Release: m =
-- min(k, available - keep), never negative, recorded per id so a repeat
-- returns the same m and changes nothing. Answers {status, m, released_local}.
local k, keep = tonumber(ARGV[5]), tonumber(ARGV[6] or '0')
local function rl()
  return fmt(num(redis.call('HGET', LEDGER, 'released_local')))
end
if k < 0 or keep < 0 then
  return {'negative', '0', rl()}
end
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence', '0', rl()}
end
local got = redis.call('HGET', RELEASES, ARGV[4])
if got then
  return {'ok', got, rl()}
end
local m = math.max(0, math.min(k, available() - keep))
local total = redis.call('HINCRBY', LEDGER, 'released_local', m)
redis.call('HSET', RELEASES, ARGV[4], fmt(m))
return {'ok', fmt(m), fmt(total)}
