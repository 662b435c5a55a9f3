-- A sale's per-user limit can be above 1, and it is enforced in Redis (DESIGN
-- I3), where the reserve script knows the limit. The unique index on
-- (sale, user_id) for live orders allowed one, so a user's second legitimate
-- order went to order_rejects instead of becoming a row. Every order is a
-- row, keyed by the primary key (sale, region, resv) alone.
DROP INDEX IF EXISTS orders_one_live_per_user;
