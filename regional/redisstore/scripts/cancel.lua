-- cancel: ARGV 3 reservation id, 4 now (ms). Ledger.Cancel: refused
-- (halted) while the region is stopped, as confirm.lua; then a repeat
-- succeeds and changes nothing; confirmed or expired answers not_active.
local id, now = ARGV[3], tonumber(ARGV[4])
if ledger_stopped() then
  return 'halted'
end
local r = redis.call('HMGET', resv_key(id), 'user', 'req', 'state')
if not r[3] then
  return 'no_such_reservation'
end
if r[3] == 'cancelled' then
  return 'ok'
end
if r[3] ~= 'active' then
  return 'not_active'
end
finish(id, r[1], r[2], 'cancelled', now)
return 'ok'
