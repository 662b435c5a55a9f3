-- recount: set the counters from the reservations, after restore.lua put
-- back what Redis had lost. The req hash lists every reservation (it is
-- never trimmed). reserved becomes the active ones and the users hash each
-- user's active and confirmed ones, exactly; sold becomes at least the
-- confirmed ones (never lowered: raise_floor may have set it from etcd's
-- floor, which also counts sales whose records every witness lost).
-- Answers {sold before, sold after, reserved before, reserved after,
-- reservations, users}. O(reservations): run once per reconcile, while
-- the sale is halted, not on the hot path. ARGV[3] is the agent's fence:
-- an older one is refused ({'stale_fence'}).
if not fence(tonumber(ARGV[3])) then
  return {'stale_fence'}
end
local l = redis.call('HMGET', LEDGER, 'sold', 'reserved')
local sold, reserved = num(l[1]), num(l[2])
local active, confirmed, n = 0, 0, 0
local held = {}
local seen = {}
for _, id in ipairs(redis.call('HVALS', REQ)) do
  if not seen[id] then
    seen[id] = true
    local r = redis.call('HMGET', resv_key(id), 'user', 'state')
    if r[2] then
      n = n + 1
      if r[2] == 'active' then
        active = active + 1
      elseif r[2] == 'confirmed' then
        confirmed = confirmed + 1
      end
      if r[2] == 'active' or r[2] == 'confirmed' then
        held[r[1]] = (held[r[1]] or 0) + 1
      end
    end
  end
end
local new_sold = math.max(sold, confirmed)
redis.call('HSET', LEDGER, 'sold', fmt(new_sold), 'reserved', fmt(active))
redis.call('DEL', USERS)
local users, flat = 0, {}
for u, c in pairs(held) do
  users = users + 1
  flat[#flat + 1] = u
  flat[#flat + 1] = fmt(c)
  if #flat >= 1000 then
    redis.call('HSET', USERS, unpack(flat))
    flat = {}
  end
end
if #flat > 0 then
  redis.call('HSET', USERS, unpack(flat))
end
return {fmt(sold), fmt(new_sold), fmt(reserved), fmt(active), n, users}
