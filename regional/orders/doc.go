// Package orders drains each sale's order stream ({sale:ID}:orders in the
// region's Redis) into a SQL order store (SQLite or PostgreSQL), and
// reconciles the two.
//
// The stream is the durable record a buyer's reservation rests on (DESIGN
// I4); SQL is the second witness operators and payment read. The consumer
// only acknowledges a stream entry after the transaction holding it
// committed, so a crash at any point replays entries rather than losing
// them, and every write is an idempotent, forward-only upsert so a replay or
// an out-of-order event converges to the same row. It must never delete an
// order or move a row out of a terminal state.
//
// The store is one implementation on database/sql (sqlstore.go); dialect.go
// holds what SQLite and PostgreSQL really differ in. Every order is a row,
// keyed by (sale, region, resv): the per-user limit is Redis's to enforce
// (DESIGN I3), so SQL never refuses a user's second order.
//
// Wiring, for a seller process:
//
//	store, err := orders.Open(ctx, dsn) // "postgres://..." or "sqlite:///var/lib/flashsale/orders.db"
//	cfg := orders.DefaultConfig()
//	cfg.Redis, cfg.Store, cfg.Registerer, cfg.Logger = rdb, store, reg, log
//	cfg.Sales = func() []string { return saleIDs() } // polled; sales may come and go
//	c, err := orders.New(cfg)
//	err = c.Start(ctx)
//	defer c.Close()
//
// Every seller of a region may run one: they share the consumer group, a
// lease gives each sale to one consumer at a time (stream order), and a
// dead consumer's lease and pending entries are taken over after
// ClaimMinIdle. Reconcile (with Repair) is the operator's tool to compare
// and re-sync one sale.
package orders
