// Package regional is the seller of one region: the shopper HTTP API and its
// funnel, admission control, the sale watch (specs from etcd) and
// reservation expiry. Its Redis (the Lua scripts, counters, batching,
// demand counting) is regional/redisstore. The region agent that applies grants and releases
// and writes the sale view is regional/agent; orders and payment have
// packages of their own.
//
// It must never let a region sell above the ceiling its Redis holds, and
// never raise that ceiling except by a max-merge of a grant from etcd.
package regional
