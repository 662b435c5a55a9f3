// Package bench runs the flash-sale baselines side by side in one process
// and one run, driven by the same load generator, so that their ratios mean
// something on a shared machine where absolute speeds are noise (DESIGN §7):
// a bare Go HTTP handler (the ceiling), the real seller before and after
// sellout, one global Redis counter behind an injected cross-region delay
// against the regional design, a PostgreSQL hot row, and the Redis cost of
// the reserve script against a bare INCR and against the batcher.
//
// It starts its own redis-server and PostgreSQL on loopback and stops them
// when done; it never reaches beyond 127.0.0.1.
package bench
