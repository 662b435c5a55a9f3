package redisstore

import "os"

// Test-only switches that turn a defence off, for the chaos suite's
// negative controls (simulations/chaos): a control runs a fault with one
// defence off and must see the checks fail, which shows the defence is
// what keeps them passing. Never set them in a deployment: each one
// allows oversell or lost reservations. They are read from the
// environment once, at start, and are the only such switches.
const (
	// EnvUnsafeNoFence=1 turns the seller epoch fence off in every
	// script (lib.lua's UNSAFE_NO_FENCE): a primary the agent has not
	// reconciled (a promoted replica, a restarted server) sells at once,
	// and a seller's epoch is not compared with the primary's.
	EnvUnsafeNoFence = "FLASHSALE_UNSAFE_NO_FENCE"
	// EnvUnsafeReconcileEtcdOnly=1 makes the region agent reconcile lost
	// writes from etcd's floors only: the order store is not asked to
	// restore reservations, per-user holdings and requestIds
	// (cmd/flashsale regional leaves agent.Config.Witness unset).
	EnvUnsafeReconcileEtcdOnly = "FLASHSALE_UNSAFE_RECONCILE_ETCD_ONLY"
)

var unsafeNoFence = os.Getenv(EnvUnsafeNoFence) == "1"

// UnsafeNoFence reports EnvUnsafeNoFence.
func UnsafeNoFence() bool { return unsafeNoFence }

// UnsafeReconcileEtcdOnly reports EnvUnsafeReconcileEtcdOnly.
func UnsafeReconcileEtcdOnly() bool { return os.Getenv(EnvUnsafeReconcileEtcdOnly) == "1" }
