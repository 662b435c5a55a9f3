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

// TestLimiterShare: with n live sellers each enforces 1/n of the rate
// and burst, so a client spraying all of them gets the configured limit
// in all, and one sticking to a single seller gets 1/n of it.
func TestLimiterShare(t *testing.T) {
	const rate, burst, secs = 10, 10, 10
	sellers := []*limiter{newLimiter(rate, burst), newLimiter(rate, burst)}
	for _, l := range sellers {
		l.setShare(len(sellers))
	}
	t0 := time.Unix(1000, 0)
	// One request every millisecond for secs seconds, round-robin over
	// the sellers (spraying) or always to the first (sticking).
	count := func(spray bool, key string) int {
		n := 0
		for i := range secs * 1000 {
			l := sellers[0]
			if spray {
				l = sellers[i%len(sellers)]
			}
			if ok, _ := l.allow(key, t0.Add(time.Duration(i)*time.Millisecond)); ok {
				n++
			}
		}
		return n
	}
	// burst up front, then the rate: burst + rate*secs in all.
	if got, want := count(true, "sprayer"), burst+rate*secs; got < want-2 || got > want {
		t.Fatalf("spraying both sellers: %d allowed, want about %d", got, want)
	}
	if got, want := count(false, "sticker"), (burst+rate*secs)/2; got < want-2 || got > want {
		t.Fatalf("sticking to one seller: %d allowed, want about %d", got, want)
	}
	// A seller leaves: the one left enforces the whole limit.
	sellers[0].setShare(1)
	if got, want := count(false, "after"), burst+rate*secs; got < want-2 || got > want {
		t.Fatalf("alone: %d allowed, want about %d", got, want)
	}
}
