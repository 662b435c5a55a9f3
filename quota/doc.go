// Package quota is the pure arithmetic of a flash sale's allocation: the
// monotone per-region counters held by the coordinator, the model of a
// region's Redis ledger, and the planners that decide grants and releases.
//
// It is told what happened and answers what to do. It must never perform
// I/O, read a clock, start goroutines or draw random numbers: time and
// every other input arrive as arguments. The coordinator, the region agent
// and the simulations all drive this same code.
package quota
