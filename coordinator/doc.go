// Package coordinator drives the quota core against etcd: leader election,
// the sale catalogue, region liveness through leases, fenced writes of
// grants and release requests, the rebalance loop (every decision through
// quota.Decide) and the gRPC API used by flashctl (and, once built, by
// Terraform).
//
// It never talks to a region's Redis on the hot path and never writes to
// etcd without the leader fence (DESIGN I5).
package coordinator
