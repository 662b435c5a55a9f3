// Package chaos runs the fault scenarios of issue 16 against the real
// binaries on one machine: flashsale coordinators and regional sellers and
// agents as separate processes, real redis-server children, a three-member
// etcd embedded in this process, and toxiproxy (as a library) on the links
// a scenario cuts or slows. Each scenario runs a bounded buy load from at
// most 16 clients on 127.0.0.1, polls the invariant checker (etcd, every
// Redis) and the SQL order stores throughout, records every request as an
// operation, and checks the history for linearizability against a model of
// the sale (porcupine). It prints one table row per scenario.
//
// Replicated regions run a primary, a replica and three sentinels
// (redisproc.StartHA). Scenarios on an unsafe setting (no AOF,
// asynchronous replication) are MEASURED, and negative controls turn one
// defence off through the test-only switches of regional/redisstore
// (unsafe.go): the checks must catch them (CAUGHT), or the suite fails.
//
// It must never be pointed at anything but loopback, and never passes a
// scenario it did not run: one cut short reports NOT RUN, a failure.
package chaos
