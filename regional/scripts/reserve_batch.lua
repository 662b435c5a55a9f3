-- reserve_batch: N requests of 5 arguments each from ARGV[3] on
-- (user, requestId, now, ttl, per-user limit), answered in the same order.
-- Running them one after another inside one script gives exactly the
-- answers of N sequential reserve calls, for the cost of one round trip.
local out = {}
for i = 3, #ARGV, 5 do
  out[#out + 1] = reserve(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]))
end
return out
