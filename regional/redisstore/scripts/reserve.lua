-- reserve: ARGV 3 user, 4 requestId, 5 reservation id, 6 now (ms),
-- 7 ttl (ms), 8 per-user limit, 9 seller epoch.
return reserve_args()[1]
