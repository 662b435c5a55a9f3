-- release: ARGV 3 fence, 4 seller epoch, 5 release id, 6 k, 7 keep.
-- Ledger.Release: m = min(k, available - keep), never negative, recorded per
-- id so a repeat returns the same m and changes nothing. A new release runs
-- only under the primary's epoch and while the region is not stopped.
-- Answers {status, m, released_local}.
local k, keep = tonumber(ARGV[6]), tonumber(ARGV[7] or '0')
local function rl()
  return fmt(num(redis.call('HGET', LEDGER, 'released_local')))
end
if k < 0 or keep < 0 then
  return {'negative', '0', rl()}
end
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence', '0', rl()}
end
local got = redis.call('HGET', RELEASES, ARGV[5])
if got then
  return {'ok', got, rl()}
end
local l = redis.call('HMGET', LEDGER, 'halted', 'epoch', 'epoch_primary')
if stopped(l[1], l[2], l[3]) then
  return {'halted', '0', rl()}
end
if stale_epoch(tonumber(ARGV[4]), num(l[2])) then
  return {'stale_epoch', '0', rl()}
end
local m = math.max(0, math.min(k, available() - keep))
local total = redis.call('HINCRBY', LEDGER, 'released_local', m)
redis.call('HSET', RELEASES, ARGV[5], fmt(m))
return {'ok', fmt(m), fmt(total)}
