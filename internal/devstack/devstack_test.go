package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/coordinator/api"
	"flashsale/internal/devtoken"
	"flashsale/internal/invariants"
	"flashsale/internal/layout"
)

const debugStatus = false

const secret = "test-jwt-secret-at-least-32-bytes-long"

func startStack(t *testing.T, total int64) *Stack {
	t.Helper()
	o := Options{Regions: []string{"us", "eu", "ap"}, Sellers: 2, JWTSecret: secret,
		DemoTotal: total, DemoStart: 300 * time.Millisecond, DemoTTL: time.Minute}
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func (s *Stack) checkRegions() []invariants.Region {
	var rs []invariants.Region
	for _, r := range s.Regions {
		rs = append(rs, invariants.Region{Name: r.Name, Redis: r.rdb})
	}
	return rs
}

// watchInvariants polls the checker until the test ends and fails the test
// at the first violation seen at any poll.
func watchInvariants(t *testing.T, s *Stack) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	polls := 0
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := invariants.Check(ctx, s.Etcdcli, layout.DefaultPrefix, s.checkRegions()); err != nil && ctx.Err() == nil {
				t.Errorf("invariant violated at poll %d: %v", polls, err)
				return
			}
			polls++
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() {
		cancel()
		<-done
		if polls == 0 {
			t.Error("the invariant checker never completed a poll")
		}
		if err := invariants.Check(context.Background(), s.Etcdcli, layout.DefaultPrefix, s.checkRegions()); err != nil {
			t.Errorf("invariant violated at the end: %v", err)
		}
	}
}

func status(t *testing.T, s *Stack) *api.SaleStatusResponse {
	t.Helper()
	c, ctx, closeConn, err := s.Client(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn()
	st, err := c.SaleStatus(ctx, &api.SaleRef{Id: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type buyer struct {
	user, home string
}

// buy posts one purchase to url with the buyer's token, following a 307 to
// the home region, and returns the final status code.
func buy(t *testing.T, hc *http.Client, url string, b buyer, req string) int {
	tok, err := devtoken.Sign([]byte(secret), b.user, b.home, time.Now(), time.Hour)
	if err != nil {
		t.Error(err)
		return 0
	}
	body, _ := json.Marshal(map[string]string{"itemId": "demo", "requestId": req})
	r, _ := http.NewRequest(http.MethodPost, url+"/v1/flash-sale/buy", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(r)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Three regions, 300 units, 900 buyers hitting random sellers of random
// regions, each trying until it holds a unit or the whole sale is sold out:
// exactly 300 reservations, none twice to a user (though each buyer also
// fires a second, different request), and I1-I4 hold at every poll.
// Buyers' demand makes the rebalancer move quota to where it is wanted.
func TestEndToEndSellsExactlyTheStock(t *testing.T) {
	s := startStack(t, 300)
	waitFor(t, "the initial split and fresh reports", func() bool {
		st := status(t, s)
		fresh := 0
		for _, r := range st.Regions {
			if r.Fresh && r.Net > 0 {
				fresh++
			}
		}
		return st.Open && fresh == 3
	})
	stop := watchInvariants(t, s)

	var urls []string
	for _, r := range s.Regions {
		for _, srv := range r.Sellers {
			urls = append(urls, "http://"+srv.Addr())
		}
	}
	// The sale is over for buyers once the coordinator reports every unit
	// taken; until then a sold-out answer means "this region, for now".
	var over atomic.Bool
	go func() {
		for !over.Load() {
			st := status(t, s)
			if debugStatus {
				for _, r := range st.Regions {
					t.Logf("DBG %s net=%d sold=%d res=%d demand=%.1f fresh=%v", r.Region, r.Net, r.Sold, r.Reserved, r.Demand, r.Fresh)
				}
			}
			if st.Totals.Sold+st.Totals.Reserved >= 300 {
				over.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)

	hc := &http.Client{Timeout: 10 * time.Second}
	var created atomic.Int64
	perUser := make([]atomic.Int64, 900)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range 900 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			b := buyer{user: fmt.Sprintf("u%d", i), home: s.Opts.Regions[i%3]}
			for try := 0; !over.Load() && time.Now().Before(deadline); try++ {
				code := buy(t, hc, urls[(i+try)%len(urls)], b, fmt.Sprintf("r%d", i))
				if code == http.StatusCreated || code == http.StatusOK {
					created.Add(1)
					perUser[i].Add(1)
					// A second purchase with a fresh request must be refused.
					if c := buy(t, hc, urls[i%len(urls)], b, fmt.Sprintf("again%d", i)); c == http.StatusCreated || c == http.StatusOK {
						t.Errorf("user u%d bought twice: second answer %d", i, c)
					}
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	over.Store(true)
	stop()

	if got := created.Load(); got != 300 {
		t.Fatalf("%d reservations made for 300 units", got)
	}
	for i := range perUser {
		if n := perUser[i].Load(); n > 1 {
			t.Fatalf("user u%d got %d units", i, n)
		}
	}
}
