// Package protosim is the deterministic simulation of the quota transfer
// protocol (DESIGN §3-§4) for one sale, driving the real code: each region
// agent is regional/agent's Core (the step-driven state machine the real
// driver runs), each leader round is quota.Allocation.Round with
// quota.Learned (what coordinator/loop.go runs), and each region's Redis is
// a quota.Ledger, the model of the Lua scripts. Around them are fakes at the
// driver boundary: an etcd with revisions, the leader's and the agents'
// election fences, history with compaction, and watches that resume from an
// older revision; buyers whose demand moves between regions; and a network
// that delays, drops, duplicates and reorders messages. Leaders are deposed
// and keep writing, agents go stale or pause past their lease and keep
// acting, leaders and agents crash at every step of a transfer, regions are
// cut off, and a region's Redis fails over to a replica that missed its last
// writes.
//
// Every run is a pure function of its Config: one math/rand/v2 source seeded
// from Config.Seed drives every choice, time is a simulated millisecond
// counter, and nothing runs concurrently, so a failing seed replays exactly
// (Config.Trace prints every event and the state after every step). The
// invariants are checked after every step (checks.go), I5 at every write;
// Bugs are negative controls the checks must catch.
//
// Files: net.go the network, etcd.go the store and its fences,
// coordinator.go the leaders' driver, agent.go the agents' driver (as
// regional/agent's term.go) and the order store they reconcile from,
// buyers.go demand and reservations, faults.go what goes wrong and when,
// checks.go the invariants, sim.go the event loop.
//
// Where the model is simpler than production, on purpose:
//   - Coordinators talk to etcd directly (a write or read is atomic within a
//     step); only etcd<->agent traffic crosses the faulty network. A leader's
//     write is refused by the fence, not lost in flight.
//   - The order store is a perfect witness of every reservation a buyer was
//     told about (DESIGN I4); reconciliation replays it. A real drain lags.
//   - Redis is quota.Ledger, not the Lua; regional/redisstore's model test
//     holds the two to the same answers.
//
// It must never touch a real network, disk or clock, and it never stands in
// for tests of the real drivers or the Lua scripts.
package protosim
