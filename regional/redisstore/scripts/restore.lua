-- restore: after Redis lost writes, put back reservations its witnesses
-- (the order stream, the SQL order store) still know. ARGV[3] is the
-- agent's fence (an older one is refused: {'stale_fence'}); from ARGV[4] on,
-- groups of 8: id, user, requestId, state (active|confirmed|cancelled|
-- expired), expiresAt, createdAt, endedAt (ms), payment id. Answers one
-- word per reservation:
--   created   the hash was missing: written, with its requestId, its
--             expiry entry (active) and its events (so the stream again
--             lists it; the SQL upserts are idempotent)
--   advanced  Redis had it active, a witness had it ended: ended here too
--   extended  Redis had it active with an earlier expiry: moved later
--   same      nothing to do
--   conflict  Redis ended it otherwise, or for another user: left as is
--   req_taken created, but its requestId already names another
--             reservation (left as is: the sale must be halted meanwhile)
-- Counters (sold, reserved, users) are not touched: recount.lua sets them
-- from the reservations once every chunk is in.
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence'}
end
local out = {}
for i = 4, #ARGV, 8 do
  local id, user, req, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local exp, created, ended, payment = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local key = resv_key(id)
  local r = redis.call('HMGET', key, 'user', 'state', 'expiresAt')
  if not r[2] then
    redis.call('HSET', key, 'user', user, 'req', req, 'expiresAt', exp, 'state', state)
    if payment ~= '' then
      redis.call('HSET', key, 'payment', payment)
    end
    local word = 'created'
    if redis.call('HSETNX', REQ, req, id) == 0 and redis.call('HGET', REQ, req) ~= id then
      word = 'req_taken'
    end
    event('reserved', id, user, req, created, exp)
    if state == 'active' then
      redis.call('ZADD', EXPIRY, exp, id)
    else
      event(state, id, user, req, ended, nil, payment)
    end
    out[#out + 1] = word
  elseif r[1] ~= user then
    out[#out + 1] = 'conflict'
  elseif r[2] == 'active' and state ~= 'active' then
    redis.call('HSET', key, 'state', state)
    if payment ~= '' then
      redis.call('HSET', key, 'payment', payment)
    end
    redis.call('ZREM', EXPIRY, id)
    event(state, id, user, req, ended, nil, payment)
    out[#out + 1] = 'advanced'
  elseif r[2] == 'active' and num(exp) > num(r[3]) then
    redis.call('HSET', key, 'expiresAt', exp)
    redis.call('ZADD', EXPIRY, exp, id)
    event('extended', id, user, req, ended, exp)
    out[#out + 1] = 'extended'
  elseif r[2] ~= state and state ~= 'active' then
    out[#out + 1] = 'conflict'
  else
    out[#out + 1] = 'same'
  end
end
return out
