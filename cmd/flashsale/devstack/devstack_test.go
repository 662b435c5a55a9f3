package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"flashsale/coordinator"
	"flashsale/coordinator/api"
	"flashsale/internal/devtoken"
	"flashsale/internal/testwait"
	"flashsale/quota/layout"
	"flashsale/simulations/invariants"
)

const debugStatus = false

const secret = "test-jwt-secret-at-least-32-bytes-long"

func startStack(t *testing.T, total int64) *Stack {
	t.Helper()
	return startStackOpening(t, total, 300*time.Millisecond)
}

// startStackOpening starts three regions of two sellers each, whose demo
// sale of total units opens after opens.
func startStackOpening(t *testing.T, total int64, opens time.Duration) *Stack {
	t.Helper()
	o := Options{Regions: []string{"us", "eu", "ap"}, Sellers: 2, JWTSecret: secret,
		DemoTotal: total, DemoStart: opens, DemoTTL: time.Minute}
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
// at the first violation seen at any poll, or region it cannot read.
func watchInvariants(t *testing.T, s *Stack) (stop func()) { return watch(t, s, false) }

// watch is watchInvariants; throughOutage lets a poll that could not read
// a region pass (a Redis failing over), as long as the regions it read
// hold every invariant.
func watch(t *testing.T, s *Stack, throughOutage bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	polls := 0
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := invariants.Check(ctx, s.Etcdcli, layout.DefaultPrefix, s.checkRegions())
			if throughOutage && errors.Is(err, invariants.ErrUnreadable) {
				err = nil
			}
			if err != nil && ctx.Err() == nil {
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

// coordAddr, when set, is the coordinator that status asks instead of the
// stack's own (after the failover test closed it).
var coordAddr atomic.Value

// status reads the demo sale's status from the current coordinator; nil
// while none answers (during a failover).
func status(t *testing.T, s *Stack) *api.SaleStatusResponse {
	addr, _ := coordAddr.Load().(string)
	if addr == "" {
		addr = s.Coord.Addr()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Error(err)
		return nil
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.Opts.AdminToken)
	st, err := api.NewCoordinatorClient(cc).SaleStatus(ctx, &api.SaleRef{Id: "demo"})
	if err != nil {
		return nil
	}
	return st
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 30*time.Second, cond)
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

// buyUntilSoldOut runs 900 buyers against random sellers of random regions,
// each trying (same requestId) until it holds a unit or the coordinator
// reports the whole stock taken; midway (once half the stock is taken) it
// calls midway if not nil. It returns how many reservations buyers saw.
func buyUntilSoldOut(t *testing.T, s *Stack, total int64, midway func()) int64 {
	var urls []string
	for _, r := range s.Regions {
		for _, srv := range r.Sellers {
			urls = append(urls, "http://"+srv.Addr())
		}
	}
	var over atomic.Bool
	var created atomic.Int64
	go func() {
		half := false
		for !over.Load() {
			st := status(t, s)
			if st == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			taken := st.Totals.Sold + st.Totals.Reserved
			if !half && taken >= total/2 && midway != nil {
				half = true
				midway()
			}
			if taken >= total {
				over.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Timeout: 10 * time.Second}
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
	for i := range perUser {
		if n := perUser[i].Load(); n > 1 {
			t.Errorf("user u%d got %d units", i, n)
		}
	}
	return created.Load()
}

func waitOpen(t *testing.T, s *Stack) {
	waitFor(t, "the initial split and fresh reports", func() bool {
		st := status(t, s)
		fresh := 0
		for _, r := range st.GetRegions() {
			if r.Fresh && r.Net > 0 {
				fresh++
			}
		}
		return st.GetOpen() && fresh == 3
	})
}

func etcdRevision(t *testing.T, s *Stack) int64 {
	r, err := s.Etcdcli.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// Three regions, 300 units, 900 buyers hitting random sellers of random
// regions: exactly 300 reservations, none twice to a user (a second
// request with a fresh requestId is refused), and I1-I4 hold at every poll.
// Buyers' demand makes the rebalancer move quota to where it is wanted.
func TestEndToEndSellsExactlyTheStock(t *testing.T) {
	s := startStack(t, 300)
	waitOpen(t, s)
	stop := watchInvariants(t, s)
	rev := etcdRevision(t, s)
	got := buyUntilSoldOut(t, s, 300, nil)
	stop()
	if got != 300 {
		t.Fatalf("%d reservations made for 300 units", got)
	}
	// Every etcd write bumps the revision: coordinator, agents, all.
	t.Logf("etcd writes per 1000 purchases: %.0f", float64(etcdRevision(t, s)-rev)*1000/300)
}

// The coordinator leader is closed mid-sale; a second coordinator, already
// campaigning, takes over from the allocation in etcd and the sale still
// sells exactly its stock, with I1-I4 at every poll.
func TestEndToEndLeaderFailover(t *testing.T) {
	s := startStack(t, 300)
	cfg := coordinator.DevConfig()
	cfg.Token = s.Opts.AdminToken
	standby, err := coordinator.New(cfg, s.Etcdcli, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := standby.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer standby.Close()
	defer coordAddr.Store("")
	waitOpen(t, s)
	if !s.Coord.IsLeader() || standby.IsLeader() {
		t.Fatal("the stack's coordinator should lead and the standby follow")
	}
	stop := watchInvariants(t, s)
	got := buyUntilSoldOut(t, s, 300, func() {
		_ = s.Coord.Close() // the leader goes away mid-sale
		coordAddr.Store(standby.Addr())
	})
	stop()
	if !standby.IsLeader() {
		t.Fatal("the standby never took over")
	}
	if got != 300 {
		t.Fatalf("%d reservations made for 300 units across a failover", got)
	}
}
