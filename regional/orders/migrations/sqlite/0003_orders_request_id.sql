-- The order store is the second witness of what a region sold (DESIGN §4):
-- when Redis loses writes, orders.Restore rebuilds the reservations from it,
-- and a buyer's retry must find its reservation again by its requestId.
ALTER TABLE orders ADD COLUMN req_id TEXT NOT NULL DEFAULT '';
