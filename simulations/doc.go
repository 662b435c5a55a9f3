// Package simulations holds the deterministic protocol simulation, the load
// generator and the baselines it is compared with, and the fault runs.
//
// Simulations use fakes for the network and the stores; they never stand in
// for tests of the real components.
package simulations
