-- lib.lua is prepended to every script by store.go, so the reservation
-- logic exists once and reserve.lua and reserve_batch.lua cannot drift apart.
-- Every script mirrors quota.Ledger: same checks, same order, same answers.
--
-- KEYS (all under one {sale:ID} hash tag, so this runs on Redis Cluster):
--   1 ledger   2 releases   3 users   4 req   5 expiry   6 orders   7 view
-- ARGV 1 sale id, 2 region; script arguments start at ARGV[3].
-- Reservation hashes live at <prefix>:resv:<id>, in the same slot.
local LEDGER, RELEASES, USERS, REQ, EXPIRY, ORDERS, VIEW = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
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

-- primary names the server this script runs on: its replication id, which
-- a promoted replica (or a restarted server) changes. Ledger.Primary.
local function primary()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
end

-- stopped is Ledger.Stopped: halted by the agent, or, once the agent ever
-- set a seller epoch, a primary it has not reconciled (DESIGN §4.5). The
-- INFO call is made only when an epoch is set.
-- UNSAFE_NO_FENCE (a test-only switch store.go prepends: redisstore's
-- unsafe.go) leaves only halted.
local function stopped(halted, epoch, epoch_primary)
  if halted == '1' then
    return true
  end
  return not UNSAFE_NO_FENCE and num(epoch) > 0 and epoch_primary ~= primary()
end

-- ledger_stopped is stopped() on the ledger's own fields: the check of
-- the scripts that need nothing else of the ledger (confirm, cancel).
local function ledger_stopped()
  local l = redis.call('HMGET', LEDGER, 'halted', 'epoch', 'epoch_primary')
  return stopped(l[1], l[2], l[3])
end

-- stale_epoch says a seller's epoch is not the primary's (always false
-- under the test-only UNSAFE_NO_FENCE).
local function stale_epoch(given, epoch)
  return not UNSAFE_NO_FENCE and given ~= epoch
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
-- from ARGV[3] on, seven arguments each (user, requestId, reservation id,
-- now ms, ttl ms, per-user limit, seller epoch): exactly the answers of that many
-- sequential calls. Each answer is {outcome, id, user, req, expiresAt,
-- state}, or {'id_taken', id} for a request whose new reservation id is
-- already in use (Ledger's ErrResvExists): a reservation is never
-- overwritten, and that request changes nothing.
--
-- The reservation id is the caller's (a ULID the seller made), opaque and
-- unique across regions; the ledger keeps no sequence. A ledger written
-- before ids were given still holds a 'seq' field: nothing reads it.
--
-- A call reads and writes each shared key once, not once per request:
-- the requestIds and users of the whole call are read with one HMGET each,
-- what the call made is written with one HSET or ZADD per key at the end,
-- and in between the call's own reservations are kept in Lua tables, so a
-- later request of the same call sees them as sequential calls would. Per
-- reservation that leaves the check that its id is free, its hash and its
-- event: three commands where one request at a time took eight.
local function reserve_args()
  local l = redis.call('HMGET', LEDGER, 'halted', 'granted_seen', 'released_local', 'sold', 'reserved', 'epoch', 'epoch_primary')
  local halted = stopped(l[1], l[6], l[7])
  local epoch = num(l[6])
  local available = num(l[2]) - num(l[3]) - num(l[4]) - num(l[5])
  local reqs, users = {}, {}
  for i = 3, #ARGV, 7 do
    reqs[#reqs + 1] = ARGV[i + 1]
    users[#users + 1] = ARGV[i]
  end
  local olds = redis.call('HMGET', REQ, unpack(reqs))
  local counts = redis.call('HMGET', USERS, unpack(users))
  local held, made_req = {}, {} -- this call's view: user -> count, req -> id
  local req_writes, user_writes, expiry_writes = {}, {}, {}
  local made = 0
  local out = {}
  for k = 1, #reqs do
    local i = 3 + (k - 1) * 7
    local user, req, id = users[k], reqs[k], ARGV[i + 2]
    local now, ttl, limit = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
    local given = tonumber(ARGV[i + 6])
    local old = made_req[req] or olds[k]
    if held[user] == nil then
      held[user] = num(counts[k])
    end
    if old then
      local r = redis.call('HMGET', resv_key(old), 'user', 'req', 'expiresAt', 'state')
      out[#out + 1] = {'duplicate', old, r[1] or '', r[2] or req, r[3] or '0', r[4] or ''}
    elseif halted then
      out[#out + 1] = {'halted'}
    elseif stale_epoch(given, epoch) then
      out[#out + 1] = {'stale_epoch'}
    elseif held[user] >= limit then
      out[#out + 1] = {'user_limit'}
    elseif available - made <= 0 then
      out[#out + 1] = {'sold_out'}
    elseif redis.call('EXISTS', resv_key(id)) == 1 then
      -- This call's own reservations are written at once, so EXISTS
      -- sees them too.
      out[#out + 1] = {'id_taken', id}
    else
      made = made + 1
      local exp = fmt(now + ttl)
      redis.call('HSET', resv_key(id), 'user', user, 'req', req, 'expiresAt', exp, 'state', 'active')
      event('reserved', id, user, req, fmt(now), exp)
      held[user] = held[user] + 1
      made_req[req] = id
      req_writes[#req_writes + 1] = req
      req_writes[#req_writes + 1] = id
      user_writes[#user_writes + 1] = user
      expiry_writes[#expiry_writes + 1] = exp
      expiry_writes[#expiry_writes + 1] = id
      out[#out + 1] = {'reserved', id, user, req, exp, 'active'}
    end
  end
  if made > 0 then
    local counts_out = {}
    for _, user in ipairs(user_writes) do
      if held[user] then
        counts_out[#counts_out + 1] = user
        counts_out[#counts_out + 1] = fmt(held[user])
        held[user] = nil -- once per user
      end
    end
    redis.call('HSET', USERS, unpack(counts_out))
    redis.call('HSET', REQ, unpack(req_writes))
    redis.call('ZADD', EXPIRY, unpack(expiry_writes))
    redis.call('HSET', LEDGER, 'reserved', fmt(num(l[5]) + made))
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
