// Package regional is the seller of one region: the shopper HTTP API and its
// funnel, the Redis store driven by atomic Lua scripts, reservation expiry,
// and the region agent that applies grants and releases.
//
// It must never let a region sell above the ceiling its Redis holds, and
// never raise that ceiling except by a max-merge of a grant from etcd.
package regional
