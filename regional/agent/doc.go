// Package agent is a region's agent: the one process per region, elected on
// etcd, that carries the coordinator's decisions into the region's Redis and
// reports the region's counters back.
//
// As leader it max-merges each sale's granted_r into Redis, runs the release
// script for a pending release request and acknowledges it with the
// cumulative released_local, reports sold, reserved, released_local,
// granted_seen and demand on its session lease (at once when the region
// turns low, else one coalesced report per ReportRefresh), copies the other
// regions' sold and reserved into the region's Redis as the sale view, and
// halts and reconciles a Redis that lost writes (counters below what etcd
// last heard) before it sells again.
//
// Every Redis write carries the agent's election revision as its fence, and
// every etcd write compares the election key's create revision, so an agent
// that lost its election can change neither the region's Redis nor its
// reports (DESIGN I5). It must never raise a region's ceiling except by a
// max-merge of granted_r read from etcd, and never lower released_local or
// sold in Redis.
package agent
