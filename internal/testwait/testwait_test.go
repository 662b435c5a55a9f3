package testwait

import (
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestFor(t *testing.T) {
	var n atomic.Int32
	For(t, "the third poll", 10*time.Second, func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Fatalf("polled %d times, want 3", n.Load())
	}
	ft := &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		For(ft, "never", 20*time.Millisecond, func() bool { return false })
	}()
	if ft.failed == "" {
		t.Fatal("a condition that never holds did not fail the test")
	}
}
