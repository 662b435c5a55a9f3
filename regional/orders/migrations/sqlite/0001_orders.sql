-- Times are unix milliseconds (SQLite has no timestamp type).
CREATE TABLE orders (
    sale       TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    resv       TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0,
    payment_id TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (sale, region, resv)
);

-- Last line of defence for the per-user limit (DESIGN I3): Redis enforces
-- it, this index refuses a second live order for a user if Redis ever did not.
CREATE UNIQUE INDEX orders_one_live_per_user ON orders (sale, user_id)
    WHERE state IN ('reserved', 'confirmed');

-- Stream entries that could not become an order row (malformed, or refused
-- by the per-user index). Kept so the entry can be acknowledged without
-- being lost.
CREATE TABLE order_rejects (
    sale        TEXT    NOT NULL,
    region      TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    resv        TEXT    NOT NULL DEFAULT '',
    user_id     TEXT    NOT NULL DEFAULT '',
    type        TEXT    NOT NULL DEFAULT '',
    reason      TEXT    NOT NULL,
    fields      TEXT    NOT NULL DEFAULT '',
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (sale, region, stream_id)
);
