CREATE TABLE orders (
    sale       text        NOT NULL,
    region     text        NOT NULL,
    resv       text        NOT NULL,
    user_id    text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    payment_id text        NOT NULL DEFAULT '',
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
    sale        text        NOT NULL,
    region      text        NOT NULL,
    stream_id   text        NOT NULL,
    resv        text        NOT NULL DEFAULT '',
    user_id     text        NOT NULL DEFAULT '',
    type        text        NOT NULL DEFAULT '',
    reason      text        NOT NULL,
    fields      text        NOT NULL DEFAULT '',
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (sale, region, stream_id)
);
