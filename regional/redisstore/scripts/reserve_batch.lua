-- reserve_batch: N requests of 7 arguments each from ARGV[3] on
-- (user, requestId, reservation id, now, ttl, per-user limit, seller epoch), answered
-- in the same order: exactly the answers of N sequential reserve calls,
-- for the cost of one round trip.
return reserve_args()
