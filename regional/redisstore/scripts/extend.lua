-- extend: ARGV 3 reservation id, 4 wanted expiresAt (ms), 5 cap (ms).
-- Moves an active reservation's expiry later (when payment is down), never
-- beyond the cap and never earlier. Answers {status, expiresAt}.
local id, want, cap = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
-- A stopped region changes nothing but through its agent (confirm.lua);
-- nothing expires meanwhile either (expire.lua).
if ledger_stopped() then
  return {'halted', '0'}
end
local r = redis.call('HMGET', resv_key(id), 'user', 'req', 'state', 'expiresAt')
if not r[3] then
  return {'no_such_reservation', '0'}
end
if r[3] ~= 'active' then
  return {'not_active', r[4] or '0'}
end
local cur = num(r[4])
local target = math.min(want, cap)
if target <= cur then
  return {'ok', r[4]}
end
local exp = fmt(target)
redis.call('HSET', resv_key(id), 'expiresAt', exp)
redis.call('ZADD', EXPIRY, 'XX', exp, id)
-- Extend has no caller clock; the event carries the server's.
local t = redis.call('TIME')
event('extended', id, r[1], r[2], fmt(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), exp)
return {'ok', exp}
