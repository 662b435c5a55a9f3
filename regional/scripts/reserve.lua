-- reserve: ARGV 3 user, 4 requestId, 5 now (ms), 6 ttl (ms), 7 per-user limit.
return reserve_args()[1]
