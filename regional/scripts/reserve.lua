-- reserve: ARGV 3 user, 4 requestId, 5 now (ms), 6 ttl (ms), 7 per-user limit.
return reserve(ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
