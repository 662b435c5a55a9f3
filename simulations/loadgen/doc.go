// Package loadgen is the flash-sale load generator: a population of
// distinct users spread over regions with a skew, each buying once with a
// signed identity token, driven open-loop (Poisson arrivals at a target
// rate) or closed-loop (C workers), with latency recorded by outcome; and a
// verifier that reads the regions' Redis (and, if given, their SQL order
// stores) after a run and reports any oversell (DESIGN I1), user above the
// per-user limit (I3), and units left stranded in a region.
//
// The generator is bounded in request count and time, and its HTTP client
// only talks to loopback addresses: it must never be pointed at a real
// deployment by mistake.
package loadgen
