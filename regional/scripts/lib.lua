-- lib.lua is prepended to every script by store.go, so the reservation
-- logic exists once and reserve.lua and reserve_batch.lua cannot drift apart.
-- Every script mirrors quota.Ledger: same checks, same order, same answers.
--
-- KEYS (all under one {sale:ID} hash tag, so this runs on Redis Cluster):
--   1 ledger   2 releases   3 users   4 req   5 expiry   6 orders
-- ARGV 1 sale id, 2 region; script arguments start at ARGV[3].
-- Reservation hashes live at <prefix>:resv:<id>, in the same slot.
local LEDGER, RELEASES, USERS, REQ, EXPIRY, ORDERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local PREFIX = string.sub(LEDGER, 1, -8) -- strip ":ledger"
local SALE, REGION = ARGV[1], ARGV[2]

local function num(v)
  return tonumber(v) or 0
end

-- Counters are written as decimal strings: tostring would switch to
-- exponent notation for large values.
local function fmt(n)
  return string.format('%d', n)
end

local function resv_key(id)
  return PREFIX .. ':resv:' .. id
end

local function event(kind, id, user, req, at, expires_at, payment)
  local f = {'type', kind, 'sale', SALE, 'region', REGION, 'resv', id, 'user', user, 'req', req, 'at', at}
  if expires_at then
    f[#f + 1] = 'expiresAt'
    f[#f + 1] = expires_at
  end
  if payment and payment ~= '' then
    f[#f + 1] = 'payment'
    f[#f + 1] = payment
  end
  redis.call('XADD', ORDERS, '*', unpack(f))
end

-- fence refuses an agent older than the newest one seen (Ledger.fence).
local function fence(f)
  local cur = num(redis.call('HGET', LEDGER, 'fence'))
  if f < cur then
    return false
  end
  if f > cur then
    redis.call('HSET', LEDGER, 'fence', fmt(f))
  end
  return true
end

-- available is Ledger.Available: ceiling - sold - reserved, never negative.
local function available()
  local l = redis.call('HMGET', LEDGER, 'granted_seen', 'released_local', 'sold', 'reserved')
  local a = num(l[1]) - num(l[2]) - num(l[3]) - num(l[4])
  if a < 0 then
    return 0
  end
  return a
end

-- user_down frees one of the user's slots; a zero count is deleted so that
-- the users hash only holds buyers with a live claim.
local function user_down(user)
  if redis.call('HINCRBY', USERS, user, -1) <= 0 then
    redis.call('HDEL', USERS, user)
  end
end

-- reserve_args is Ledger.Reserve applied in turn to each request in ARGV
-- from ARGV[3] on, five arguments each (user, requestId, now ms, ttl ms,
-- per-user limit): exactly the answers of that many sequential calls.
-- Each answer is {outcome, id, user, req, expiresAt, state}. The ledger
-- hash is read once and written once per call, not per request: a third
-- of the commands (and of the Lua-to-Redis crossings) a reservation costs.
local function reserve_args()
  local l = redis.call('HMGET', LEDGER, 'halted', 'granted_seen', 'released_local', 'sold', 'reserved', 'seq')
  local halted = l[1] == '1'
  local available = num(l[2]) - num(l[3]) - num(l[4]) - num(l[5])
  local seq = num(l[6])
  local made = 0
  local out = {}
  for i = 3, #ARGV, 5 do
    local user, req = ARGV[i], ARGV[i + 1]
    local now, ttl, limit = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    local old = redis.call('HGET', REQ, req)
    if old then
      local r = redis.call('HMGET', resv_key(old), 'user', 'req', 'expiresAt', 'state')
      out[#out + 1] = {'duplicate', old, r[1] or '', r[2] or req, r[3] or '0', r[4] or ''}
    elseif halted then
      out[#out + 1] = {'halted'}
    elseif num(redis.call('HGET', USERS, user)) >= limit then
      out[#out + 1] = {'user_limit'}
    elseif available - made <= 0 then
      out[#out + 1] = {'sold_out'}
    else
      made = made + 1
      local id = fmt(seq + made)
      local exp = fmt(now + ttl)
      redis.call('HSET', resv_key(id), 'user', user, 'req', req, 'expiresAt', exp, 'state', 'active')
      redis.call('HINCRBY', USERS, user, 1)
      redis.call('HSET', REQ, req, id)
      redis.call('ZADD', EXPIRY, exp, id)
      event('reserved', id, user, req, fmt(now), exp)
      out[#out + 1] = {'reserved', id, user, req, exp, 'active'}
    end
  end
  if made > 0 then
    redis.call('HINCRBY', LEDGER, 'seq', made)
    redis.call('HINCRBY', LEDGER, 'reserved', made)
  end
  return out
end

-- finish ends an active reservation as confirmed, cancelled or expired
-- (Ledger.Confirm and Ledger.end): exactly once, because callers check
-- that the state is active first.
local function finish(id, user, req, state, now, payment)
  redis.call('HSET', resv_key(id), 'state', state)
  redis.call('HINCRBY', LEDGER, 'reserved', -1)
  if state == 'confirmed' then
    redis.call('HINCRBY', LEDGER, 'sold', 1)
  else
    user_down(user)
  end
  redis.call('ZREM', EXPIRY, id)
  event(state, id, user, req, fmt(now), nil, payment)
end
