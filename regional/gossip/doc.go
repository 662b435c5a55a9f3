// Package gossip makes the sellers and the agent of one region a
// memberlist cluster (github.com/hashicorp/memberlist): who is alive (with
// role, version and load in each member's metadata), and small facts that
// spread by gossip faster than each seller would read them from Redis: a
// sale's stock snapshot (from which sold out, quota pending, halted
// follow) and each seller's demand. Every fact is a State; for each key
// the newest wins by version, so reordering and repeats are harmless, and
// push-pull hands everything to a member that joins late. Redis and etcd
// stay the authority: gossip only lets a seller answer before its own
// read. Members of other regions (memberlist's Label) and members without
// the keyring are refused.
package gossip
