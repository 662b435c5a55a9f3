// Package testwait waits in tests for something another goroutine or
// process brings about, with a hang guard: the bound is how long a test
// may wait before it fails, never a timing being asserted.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every few milliseconds until it holds, and fails the test
// naming what it waited for if it does not hold within the bound.
func For(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	every := min(50*time.Millisecond, max(5*time.Millisecond, within/1000))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %s", what, within)
		}
		time.Sleep(every)
	}
}
