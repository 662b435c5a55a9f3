-- set_view: ARGV 3 fence, 4 total, 5 others_sold, 6 others_reserved, 7 at.
-- The agent's copy of the rest of the sale (Store.SetSaleView); advisory:
-- no script decides a reservation from it.
if not fence(tonumber(ARGV[3])) then
  return 'stale_fence'
end
redis.call('HSET', VIEW, 'total', ARGV[4], 'others_sold', ARGV[5], 'others_reserved', ARGV[6], 'at', ARGV[7])
return 'ok'
