// Package protosim is the deterministic simulation of the quota transfer
// protocol (DESIGN §3-§4) for one sale: a coordinator writing a
// quota.Allocation into a fake etcd fenced by the leader's revision, one agent
// and one quota.Ledger (standing for Redis) per region, buyers whose demand
// shifts between regions, and a network that delays, drops, duplicates and
// reorders messages and watch events. Leaders are deposed and keep writing,
// agents and leaders crash at every step of a transfer, regions are cut off,
// and a region's store loses its last writes as a failover would.
//
// Every run is a pure function of its Config: one math/rand/v2 source seeded
// from Config.Seed drives every choice, time is a simulated millisecond
// counter, and nothing runs concurrently, so a failing seed replays exactly.
// The invariants are checked after every step.
//
// It must never touch a real network, disk or clock, and it never stands in
// for tests of the real coordinator, agent or Lua scripts. The protocol code
// paths here mirror the real ones; the arithmetic is quota's, unmodified.
// Known deviations from production are marked in comments.
package protosim
