// Package protosim is the deterministic simulation of the quota transfer
// protocol (DESIGN §3-§4) for one sale: a coordinator driving quota.Step and
// its planners on a quota.Allocation kept in a fake etcd that fences every
// write on the leader's revision; one agent and one quota.Ledger (standing
// for Redis) per region; buyers whose demand moves between regions; and a
// network that delays, drops, duplicates and reorders messages and watch
// events. Leaders are deposed and keep writing, agents go stale and keep
// acting, leaders and agents crash at every step of a transfer, regions are
// cut off, and a region's store loses its last writes as a failover would.
//
// Every run is a pure function of its Config: one math/rand/v2 source seeded
// from Config.Seed drives every choice, time is a simulated millisecond
// counter, and nothing runs concurrently, so a failing seed replays exactly
// (Config.Trace prints every event and the state after every step). The
// invariants are checked after every step (checks.go); Bugs are negative
// controls the checks must catch.
//
// Files: net.go the network, etcd.go the store and its fences,
// coordinator.go the leaders, agent.go the region agents and their
// reconciliation, buyers.go demand and reservations, faults.go what goes
// wrong and when, checks.go the invariants, sim.go the event loop.
//
// Where the model is simpler than production, on purpose:
//   - Coordinators talk to etcd directly (a write or read is atomic within a
//     step); only etcd<->agent traffic crosses the faulty network. A leader's
//     write is refused by the fence, not lost in flight.
//   - The order store is a perfect witness of every reservation a buyer was
//     told about (DESIGN I4); reconciliation replays it. A real drain lags.
//   - The sellers' Redis epoch fence (scripts refuse a stale primary epoch)
//     is modelled here, because quota.Ledger has no such fence.
//
// It must never touch a real network, disk or clock, and it never stands in
// for tests of the real coordinator, agent or Lua scripts.
package protosim
