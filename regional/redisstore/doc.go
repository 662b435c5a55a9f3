// Package redisstore is a region's Redis: the atomic Lua scripts (which
// mirror quota.Ledger) behind reserve, confirm, cancel, expire, extend and
// the agent's fenced grant, release, floor, halt and view writes; the
// counters and sale view sellers read; the Batcher that packs concurrent
// reserves into one script call; buy-attempt counting (Demand, read by
// the agent's DemandMeter); and reservation ids. The seller (regional) and
// the region agent (regional/agent) both use it, and it knows nothing of
// HTTP or tokens. Key names come from quota/layout.
package redisstore
