package regional

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiterBucket(t *testing.T) {
	l := newLimiter(2, 3) // 2/s, bursts of 3
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow("u", now); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("u", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th request: ok=%v wait=%v, want refused for 500ms", ok, wait)
	}
	if ok, _ := l.allow("v", now); !ok {
		t.Fatal("another key shares the bucket")
	}
	if ok, _ := l.allow("u", now.Add(499*time.Millisecond)); ok {
		t.Fatal("allowed before a token refilled")
	}
	if ok, _ := l.allow("u", now.Add(time.Second)); !ok {
		t.Fatal("refused after a token refilled")
	}
	var off *limiter
	if ok, _ := off.allow("u", now); !ok {
		t.Fatal("nil limiter refused")
	}
	if ok, _ := newLimiter(0, 0).allow("u", now); !ok {
		t.Fatal("rate 0 refused")
	}
}

// TestLimiterForgets: buckets idle long enough to be full again are
// dropped, so memory follows active keys, not every key ever seen.
func TestLimiterForgets(t *testing.T) {
	l := newLimiter(10, 10) // full again after 1s
	now := time.Unix(1000, 0)
	const keys = 200_000
	for i := range keys {
		if i%(keys/10) == 0 {
			now = now.Add(2 * time.Second) // earlier keys are now idle
		}
		l.allow(fmt.Sprint("user-", i), now)
	}
	if n := l.size(); n >= keys/2 {
		t.Fatalf("limiter holds %d buckets after %d keys, most of them idle", n, keys)
	}
}
