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
package orders
