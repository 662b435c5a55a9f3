// Package quota is the pure arithmetic of a flash sale's allocation: the
// monotone per-region counters held by the coordinator, the model of a
// region's Redis ledger, and the planners that decide grants and releases.
//
// It is told what happened and answers what to do. It must never perform
// I/O, read a clock, start goroutines or draw random numbers: time and
// every other input arrive as arguments. The coordinator, the region agent
// and the simulations all drive this same code. TestPurity keeps it so
// (even fmt is out: it brings os and time).
//
// The pieces:
//
//   - Ledger: one region's Redis state, step for step what the Lua
//     scripts do (the contract regional's tests replay on both).
//   - Allocation: the coordinator's record of a sale. Grant refuses any
//     grant that would take the sum of net grants above the total;
//     AckRelease is the only place units freed by a region are granted
//     elsewhere (DESIGN §4). Everything else goes through these two.
//   - Decide is "which plan now" for a sale (learning, paused, ended, split
//     lead, split once, no releases before the opening, end sweep, dead
//     regions): the one decision the coordinator's loop, its plan API and
//     protosim all make. It picks a planner and never changes the
//     allocation.
//   - Planners (InitialSplit, Rebalance, EndSweep, Drain, Move) read an
//     Allocation and return a Plan; they never change it. Apply applies a
//     plan, all or nothing. Policy tunes them; Policy.Low says when a
//     region must pull quota (agents report at once when it turns low).
//   - Step takes one fact (RegionReported, ReleaseAcked; Tick only in
//     tests) and returns the Actions the caller must carry out, like etcd
//     raft's Ready.
//   - Refuse says what a buyer of a dry region is told (quota_pending,
//     all_reserved, sold_out) from sale-wide sold and reserved (DESIGN L1).
//   - Status is the per-region view (net, sold, reserved, available,
//     demand, report age) the API shows and the planners read.
//
// Times are unix milliseconds, passed in.
package quota
