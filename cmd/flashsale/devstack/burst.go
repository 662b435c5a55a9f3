package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"flashsale/coordinator/api"
	"flashsale/internal/devtoken"
)

// BurstOptions is an opening burst against the stack's demo sale: Buyers
// buyers, each arriving at a uniform random moment within Spread after the
// opening, homed by Skew (weights in the order of the stack's regions),
// each retrying every retryable answer with the same requestId after the
// hint it carries (retryAfterMs, else Retry-After), at most Retries times
// and never past Deadline after the opening. Nobody pays or cancels.
type BurstOptions struct {
	Buyers   int
	Spread   time.Duration
	Skew     []float64
	Retries  int
	Deadline time.Duration
	Seed     uint64
}

// BurstReport is what the buyers saw, and the sale's state after them.
type BurstReport struct {
	Total, Reserved int64            // units; reserved: buyers who hold one
	Answers         map[string]int64 // every answer by code ("reserved" for 201/200)
	// SoldOutWhileStock counts 410 sold_out answers given although the sale
	// ended the run with units unsold: sold only grows, so each of those was
	// given while a unit was unsold (DESIGN L1).
	SoldOutWhileStock int64
	Sold              int64           // sold (paid) over all regions at the end
	Retries           []int           // per buyer, sorted
	ReservedAt        []time.Duration // per reservation, since the opening, sorted
	// DryWaits is, per dry spell of a region (from its first quota_pending
	// answer to its next reservation), how long it waited for quota. Sorted.
	DryWaits []time.Duration
	Granted  int64 // Σ granted over regions at the end (the allocation)
	Released int64 // Σ released over regions at the end
}

// Burst runs o against the stack's demo sale and returns what happened. It
// waits for the opening itself; ctx bounds the whole run.
func (s *Stack) Burst(ctx context.Context, o BurstOptions) (BurstReport, error) {
	st, err := s.demoStatus(ctx)
	if err != nil {
		return BurstReport{}, err
	}
	opens := st.Sale.StartsAt.AsTime()
	rep := BurstReport{Total: st.Sale.Total, Answers: map[string]int64{}}
	homes := s.homes(o)
	urls := s.sellerURLs()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.Buyers, MaxConnsPerHost: 0}}
	defer hc.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(o.Seed, 7))
	starts := make([]time.Duration, o.Buyers)
	for i := range starts {
		starts[i] = time.Duration(rng.Int64N(int64(max(1, o.Spread))))
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	soldOut := int64(0)
	type event struct {
		at     time.Time
		region string
		code   string
	}
	var events []event
	for i := range o.Buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			home := homes[i]
			user := fmt.Sprintf("b%d", i)
			tok, err := devtoken.Sign([]byte(s.Opts.JWTSecret), user, home, time.Now(), time.Hour)
			if err != nil {
				return
			}
			sellers := urls[home]
			url := sellers[i%len(sellers)] + "/v1/flash-sale/buy"
			body, _ := json.Marshal(map[string]string{"itemId": "demo", "requestId": "r" + strconv.Itoa(i)})
			if !sleepUntil(ctx, opens.Add(starts[i])) {
				return
			}
			for try := 0; ; try++ {
				code, wait := post(ctx, hc, url, tok, body)
				now := time.Now()
				mu.Lock()
				rep.Answers[code]++
				if code == "sold_out" {
					soldOut++
				}
				events = append(events, event{now, home, code})
				if code == "reserved" {
					rep.Reserved++
					rep.ReservedAt = append(rep.ReservedAt, now.Sub(opens))
				}
				done := code != "timeout" && wait == 0 || try >= o.Retries || now.Add(wait).After(opens.Add(o.Deadline))
				if done {
					rep.Retries = append(rep.Retries, try)
				}
				mu.Unlock()
				if done || !sleepUntil(ctx, now.Add(wait)) {
					return
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(events, func(a, b event) int { return a.at.Compare(b.at) })
	dryFrom := map[string]time.Time{}
	for _, e := range events {
		switch {
		case e.code == "quota_pending" && dryFrom[e.region].IsZero():
			dryFrom[e.region] = e.at
		case e.code == "reserved" && !dryFrom[e.region].IsZero():
			rep.DryWaits = append(rep.DryWaits, e.at.Sub(dryFrom[e.region]))
			dryFrom[e.region] = time.Time{}
		}
	}
	slices.Sort(rep.Retries)
	slices.Sort(rep.ReservedAt)
	slices.Sort(rep.DryWaits)
	if st, err = s.demoStatus(ctx); err != nil {
		return rep, err
	}
	rep.Sold, rep.Granted, rep.Released = st.Totals.Sold, st.Totals.Granted, st.Totals.Released
	if rep.Sold < rep.Total {
		rep.SoldOutWhileStock = soldOut
	}
	return rep, nil
}

// homes assigns buyer i a home region by o.Skew (even when empty), spread
// deterministically so that the shares hold exactly for any count.
func (s *Stack) homes(o BurstOptions) []string {
	w := o.Skew
	if len(w) == 0 {
		w = make([]float64, len(s.Opts.Regions))
		for i := range w {
			w[i] = 1
		}
	}
	var sum float64
	for _, x := range w {
		sum += x
	}
	out := make([]string, o.Buyers)
	acc := make([]float64, len(w))
	for i := range out {
		// The region furthest behind its share gets the next buyer.
		best := 0
		for r := range w {
			acc[r] += w[r] / sum
			if acc[r] > acc[best] {
				best = r
			}
		}
		acc[best]--
		out[i] = s.Opts.Regions[best]
	}
	return out
}

// sellerURLs lists every region's sellers' base URLs.
func (s *Stack) sellerURLs() map[string][]string {
	out := map[string][]string{}
	for _, r := range s.Regions {
		for _, srv := range r.Sellers {
			out[r.Name] = append(out[r.Name], "http://"+srv.Addr())
		}
	}
	return out
}

// demoStatus reads the demo sale's status from the stack's coordinator.
func (s *Stack) demoStatus(ctx context.Context) (*api.SaleStatusResponse, error) {
	cl, cctx, closeFn, err := s.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return cl.SaleStatus(cctx, &api.SaleRef{Id: "demo"})
}

// post sends one buy and returns its answer's code ("reserved" for 201 or
// 200, "timeout" when no answer came) and the retry hint it carried.
func post(ctx context.Context, hc *http.Client, url, tok string, body []byte) (string, time.Duration) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "timeout", 0
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(r)
	if err != nil {
		return "timeout", 50 * time.Millisecond
	}
	defer resp.Body.Close()
	var e struct {
		Code         string `json:"code"`
		RetryAfterMs int64  `json:"retryAfterMs"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		return "reserved", 0
	}
	wait := time.Duration(e.RetryAfterMs) * time.Millisecond
	if wait == 0 {
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			wait = time.Duration(secs) * time.Second
		}
	}
	if e.Code == "" {
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	}
	return e.Code, wait
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Quantile is the q-quantile (0..1) of sorted values; zero when empty.
func Quantile[T any](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// ShareBy is the share of total reserved by d after the opening.
func (r BurstReport) ShareBy(d time.Duration) float64 {
	if r.Total == 0 {
		return 0
	}
	n, _ := slices.BinarySearch(r.ReservedAt, d+1)
	return float64(n) / float64(r.Total)
}

// SteadyReport is a steady, even sale: how much quota moved and how many
// etcd writes (every writer: coordinator, agents) it took per purchase.
type SteadyReport struct {
	Total, Reserved    int64
	Took               time.Duration // from the first attempt to the last unit reserved
	Granted, Released  int64         // Σ over regions at the end (the allocation)
	EtcdWrites         int64         // etcd revisions during the run
	Attempts, Refusals int64
}

// ReleasedPerSold is units released (moved back) per unit reserved.
func (r SteadyReport) ReleasedPerSold() float64 {
	if r.Reserved == 0 {
		return 0
	}
	return float64(r.Released) / float64(r.Reserved)
}

// WritesPer1000 is etcd writes per 1,000 units reserved.
func (r SteadyReport) WritesPer1000() float64 {
	if r.Reserved == 0 {
		return 0
	}
	return float64(r.EtcdWrites) * 1000 / float64(r.Reserved)
}

// Steady buys the open demo sale at rate new buyers a second, spread evenly
// over the regions (each retrying on the answers' hints, same requestId),
// until the stock is reserved or limit passes.
func (s *Stack) Steady(ctx context.Context, rate float64, limit time.Duration) (SteadyReport, error) {
	st, err := s.demoStatus(ctx)
	if err != nil {
		return SteadyReport{}, err
	}
	if !sleepUntil(ctx, st.Sale.StartsAt.AsTime()) {
		return SteadyReport{}, ctx.Err()
	}
	rep := SteadyReport{Total: st.Sale.Total}
	rev0, err := s.Etcdcli.Get(ctx, "/")
	if err != nil {
		return rep, err
	}
	urls := s.sellerURLs()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var last time.Time
	tick := time.Duration(float64(time.Second) / rate)
	for i := 0; ; i++ {
		mu.Lock()
		over := rep.Reserved >= rep.Total
		mu.Unlock()
		if over || time.Since(start) > limit || !sleepUntil(ctx, start.Add(time.Duration(i)*tick)) {
			break
		}
		home := s.Opts.Regions[i%len(s.Opts.Regions)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := devtoken.Sign([]byte(s.Opts.JWTSecret), "s"+strconv.Itoa(i), home, time.Now(), time.Hour)
			if err != nil {
				return
			}
			sellers := urls[home]
			url := sellers[i%len(sellers)] + "/v1/flash-sale/buy"
			body, _ := json.Marshal(map[string]string{"itemId": "demo", "requestId": "s" + strconv.Itoa(i)})
			for try := 0; try < 10; try++ {
				code, wait := post(ctx, hc, url, tok, body)
				mu.Lock()
				rep.Attempts++
				if code == "reserved" {
					rep.Reserved++
					last = time.Now()
				} else {
					rep.Refusals++
				}
				mu.Unlock()
				if code == "reserved" || wait == 0 || wait > 2*time.Second || !sleepUntil(ctx, time.Now().Add(wait)) {
					return
				}
			}
		}()
	}
	wg.Wait()
	rep.Took = last.Sub(start)
	rev1, err := s.Etcdcli.Get(ctx, "/")
	if err != nil {
		return rep, err
	}
	rep.EtcdWrites = rev1.Header.Revision - rev0.Header.Revision
	if st, err = s.demoStatus(ctx); err != nil {
		return rep, err
	}
	rep.Granted, rep.Released = st.Totals.Granted, st.Totals.Released
	return rep, nil
}
