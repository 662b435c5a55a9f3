-- confirm: ARGV 3 reservation id, 4 now (ms), 5 payment id (may be empty;
-- recorded on the reservation and its event). Ledger.Confirm: refused
-- (halted) while the region is stopped; then a repeat succeeds and changes
-- nothing; cancelled or expired answers not_active.
local id, now, payment = ARGV[3], tonumber(ARGV[4]), ARGV[5] or ''
-- First: on a primary not reconciled yet a reservation whose write was
-- lost reads as missing, and the agent's restore will bring it back.
if ledger_stopped() then
  return 'halted'
end
local r = redis.call('HMGET', resv_key(id), 'user', 'req', 'state')
if not r[3] then
  return 'no_such_reservation'
end
if r[3] == 'confirmed' then
  return 'ok'
end
if r[3] ~= 'active' then
  return 'not_active'
end
if payment ~= '' then
  redis.call('HSET', resv_key(id), 'payment', payment)
end
finish(id, r[1], r[2], 'confirmed', now, payment)
return 'ok'
