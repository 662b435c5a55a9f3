// Package rediskey is the one home of a sale's Redis key layout: every key
// of a sale is "{sale:<id>}:<suffix>", so that one hash tag keeps all of
// them in one slot and the Lua scripts run on Redis Cluster. Everything
// that names a sale's key (the store and its scripts' KEYS, the order
// stream and its consumer, reconciliation, flashctl) builds it here. It
// only builds strings; it never talks to Redis.
package rediskey

// Sale names one of a sale's keys: Sale("s1", "ledger") is "{sale:s1}:ledger".
func Sale(sale, suffix string) string { return "{sale:" + sale + "}:" + suffix }

// Stream is the sale's order stream.
func Stream(sale string) string { return Sale(sale, "orders") }
