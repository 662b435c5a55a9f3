package bench

import (
	"testing"
)

// TestGossipSpread: a state reaches every member of a 10-member cluster
// (the figure the bench prints is a time; this checks that all arrive).
func TestGossipSpread(t *testing.T) {
	sp, err := spreadTime(10, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("p50 %s p99 %s", sp.P50, sp.P99)
}
