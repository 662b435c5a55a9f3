package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redisproc"
	"flashsale/quota/layout"
	"flashsale/regional"
	"flashsale/regional/gossip"
)

// Group 6, gossip between a region's sellers (regional/gossip):
//   - how long a state published by one member takes to reach every other
//     member, p50 and p99, with 3, 10 and 30 members on loopback (in one
//     process, memberlist's local preset);
//   - how long the others take to see a member gone after it died without
//     a goodbye (the failure detector: what moves its share of the limits);
//   - Redis scripts per buy attempt made to the other sellers of a region
//     in the second after one of them sold the region out: without gossip
//     (each seller reading its counters every 200 ms, the interval gossip
//     replaces, or every second) and with gossip (reads every second); and
//     the Redis commands/s the sellers send with no buyer at all. A seller's
//     first sold-out answer from a script already marks it dry, so each
//     other seller sends about one script after a sellout in every mode;
//     what gossip saves is the polling (a 1 s safety net instead of 200 ms).

// GossipResults is group 6.
type GossipResults struct {
	Spread []GossipSpread `json:"spread"`
	// Detect is the time from a member's death (shut down without leaving)
	// until every other member of a 10-member cluster has dropped it.
	Detect time.Duration `json:"detect_ns"`
	// ScriptsPerAttempt after a sellout, without and with gossip.
	AfterSellout []SelloutRow `json:"after_sellout"`
	// Limits is one user's admitted rate against the per-user limit.
	Limits []LimitRow `json:"limits"`
}

// GossipSpread is the spread time at one cluster size.
type GossipSpread struct {
	Members  int           `json:"members"`
	Messages int           `json:"messages"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
}

// SelloutRow counts what the other sellers sent to Redis after the sellout.
type SelloutRow struct {
	Gossip   bool          `json:"gossip"`
	Refresh  time.Duration `json:"refresh_ns"`
	Sellers  int           `json:"sellers"`
	Attempts int           `json:"attempts"`
	Scripts  int64         `json:"scripts"`
	// IdleCommands is the Redis commands the sellers sent in a second
	// with no buyer (counter reads, demand flushes).
	IdleCommands int64   `json:"idle_commands_per_s"`
	PerBuy       float64 `json:"scripts_per_attempt"`
}

func runGossip(ctx context.Context, quick bool) (*GossipResults, error) {
	out := &GossipResults{}
	messages := 50
	if quick {
		messages = 15
	}
	for _, n := range []int{3, 10, 30} {
		sp, err := spreadTime(n, messages)
		if err != nil {
			return nil, err
		}
		out.Spread = append(out.Spread, sp)
	}
	d, err := detectTime(10)
	if err != nil {
		return nil, err
	}
	out.Detect = d
	for _, m := range []struct {
		gossip  bool
		refresh time.Duration
	}{{false, 200 * time.Millisecond}, {false, regional.GossipRefreshInterval}, {true, regional.GossipRefreshInterval}} {
		row, err := scriptsAfterSellout(ctx, m.gossip, m.refresh, 5, 40)
		if err != nil {
			return nil, err
		}
		out.AfterSellout = append(out.AfterSellout, row)
	}
	spell := 3 * time.Second
	if quick {
		spell = time.Second
	}
	for _, m := range []struct{ gossip, spray bool }{{false, true}, {true, true}, {true, false}} {
		row, err := userLimit(ctx, m.gossip, m.spray, 3, 20, spell)
		if err != nil {
			return nil, err
		}
		out.Limits = append(out.Limits, row)
	}
	return out, nil
}

// cluster starts n members joined to the first; onState, if set, is called
// with the member's index.
func gossipCluster(n int, onState func(i int, st gossip.State)) ([]*gossip.Node, func(), error) {
	var nodes []*gossip.Node
	closeAll := func() {
		for _, nd := range nodes {
			_ = nd.Close()
		}
	}
	for i := range n {
		cfg := gossip.Config{Name: fmt.Sprint("m", i), Region: "bench", Role: gossip.RoleSeller, Preset: gossip.PresetLocal, Plaintext: true}
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		if onState != nil {
			cfg.OnState = func(st gossip.State) { onState(i, st) }
		}
		nd, err := gossip.Start(cfg)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		nodes = append(nodes, nd)
	}
	if err := waitCond(30*time.Second, func() bool {
		for _, nd := range nodes {
			if nd.Sellers() != n {
				return false
			}
		}
		return true
	}); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("gossip cluster of %d: %w", n, err)
	}
	return nodes, closeAll, nil
}

func waitCond(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// spreadTime publishes messages states, one at a time from a random
// member, and times each until the last member has it.
func spreadTime(n, messages int) (GossipSpread, error) {
	var mu sync.Mutex
	arrived := map[int64]int{} // version -> members that have it
	done := map[int64]time.Time{}
	nodes, closeAll, err := gossipCluster(n, func(_ int, st gossip.State) {
		mu.Lock()
		defer mu.Unlock()
		arrived[st.Version]++
		if arrived[st.Version] == n {
			done[st.Version] = time.Now()
		}
	})
	if err != nil {
		return GossipSpread{}, err
	}
	defer closeAll()
	var times []time.Duration
	for v := int64(1); v <= int64(messages); v++ {
		from := nodes[rand.IntN(n)]
		t0 := time.Now()
		if _, err := from.Publish(gossip.State{Sale: "s", Kind: gossip.KindStock, Version: v, Body: []byte(`{"c":{}}`)}); err != nil {
			return GossipSpread{}, err
		}
		if err := waitCond(30*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			_, ok := done[v]
			return ok
		}); err != nil {
			return GossipSpread{}, fmt.Errorf("state %d among %d members: %w", v, n, err)
		}
		mu.Lock()
		times = append(times, done[v].Sub(t0))
		mu.Unlock()
	}
	slices.Sort(times)
	return GossipSpread{Members: n, Messages: messages, P50: times[len(times)/2], P99: times[min(len(times)-1, len(times)*99/100)]}, nil
}

// detectTime shuts one member down without a goodbye and times until
// every other member has dropped it.
func detectTime(n int) (time.Duration, error) {
	nodes, closeAll, err := gossipCluster(n, nil)
	if err != nil {
		return 0, err
	}
	defer closeAll()
	victim := nodes[n-1]
	t0 := time.Now()
	if err := victim.Kill(); err != nil {
		return 0, err
	}
	err = waitCond(60*time.Second, func() bool {
		for _, nd := range nodes[:n-1] {
			if nd.Sellers() != n-1 {
				return false
			}
		}
		return true
	})
	return time.Since(t0), err
}

// scriptsAfterSellout runs sellers of one region on one Redis (with or
// without gossip, each reading its counters every refresh), sells the
// region out through the first, then sends attempts buy attempts to each
// of the others, spread evenly over the next second, and counts the
// scripts Redis ran for them.
func scriptsAfterSellout(ctx context.Context, withGossip bool, refresh time.Duration, sellers, attempts int) (SelloutRow, error) {
	row := SelloutRow{Gossip: withGossip, Refresh: refresh, Sellers: sellers, Attempts: (sellers - 1) * attempts}
	const sale, stock = "gossip-sale", 20
	srvs, rdb, stop, err := sellerCluster(ctx, sellers, withGossip, func(cfg *regional.Config) {
		cfg.UserRate, cfg.RefreshInterval = 0, refresh
		cfg.Sales = []layout.SaleSpec{{ID: sale, Total: stock, PerUserLimit: 1, StartsAt: time.Now().Add(-time.Minute), ReservationTTL: time.Hour}}
		cfg.StaticGrants = map[string]int64{sale: stock}
	})
	defer stop()
	if err != nil {
		return row, err
	}
	buy := func(srv *regional.Server, user string) (int, error) {
		return devBuy(ctx, "http://"+srv.Addr(), sale, user)
	}
	// The sellers' own Redis work with no buyer (counter reads, demand
	// flushes) over a second: the polling that gossip demotes.
	s0, c0, err := scriptCalls(ctx, rdb)
	if err != nil {
		return row, err
	}
	time.Sleep(time.Second)
	s1, c1, err := scriptCalls(ctx, rdb)
	if err != nil {
		return row, err
	}
	row.IdleCommands = c1 - c0
	idleScripts := s1 - s0     // counter reads are not scripts; demand flushes may be
	for i := range stock + 1 { // the last one finds the region dry
		if _, err := buy(srvs[0], fmt.Sprint("first", i)); err != nil {
			return row, err
		}
	}
	s1, _, err = scriptCalls(ctx, rdb)
	if err != nil {
		return row, err
	}
	var wg sync.WaitGroup
	gap := time.Second / time.Duration(attempts)
	for k := range attempts {
		for i, srv := range srvs[1:] {
			wg.Go(func() { _, _ = buy(srv, fmt.Sprintf("late-%d-%d", i, k)) })
		}
		time.Sleep(gap)
	}
	wg.Wait()
	s2, _, err := scriptCalls(ctx, rdb)
	if err != nil {
		return row, err
	}
	row.Scripts = max(0, s2-s1-idleScripts)
	row.PerBuy = float64(row.Scripts) / float64(row.Attempts)
	return row, nil
}

// sellerCluster starts n sellers of region "eu" on one new Redis, the
// insecure dev identity on, gossiping (the first one the seed) or not;
// mutate sets the rest. stop closes what started, even after an error.
func sellerCluster(ctx context.Context, n int, withGossip bool, mutate func(*regional.Config)) ([]*regional.Server, *redis.Client, func(), error) {
	var srvs []*regional.Server
	var undo []func()
	stop := func() {
		for _, s := range srvs {
			_ = s.Close()
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	dir, err := os.MkdirTemp("", "bench-gossip-")
	if err != nil {
		return nil, nil, stop, err
	}
	undo = append(undo, func() { _ = os.RemoveAll(dir) })
	rp, err := redisproc.Start(ctx, redisproc.Options{Dir: dir})
	if err != nil {
		return nil, nil, stop, err
	}
	undo = append(undo, func() { _ = rp.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: rp.Addr})
	undo = append(undo, func() { _ = rdb.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		cfg := regional.DevConfig()
		cfg.Region, cfg.InsecureDevIdentity = "eu", true
		mutate(&cfg)
		if withGossip {
			cfg.Gossip = &gossip.Config{Name: fmt.Sprint("seller", i), Preset: gossip.PresetLocal, Plaintext: true}
			if i > 0 {
				cfg.Gossip.Seeds = []string{srvs[0].GossipAddr()}
			}
		}
		srv, err := regional.New(cfg, regional.Deps{Redis: rdb, Logger: log})
		if err != nil {
			return nil, nil, stop, err
		}
		if err := srv.Start(ctx); err != nil {
			return nil, nil, stop, err
		}
		srvs = append(srvs, srv)
	}
	if withGossip {
		if err := waitCond(30*time.Second, func() bool {
			for _, s := range srvs {
				if len(s.Members()) != n {
					return false
				}
			}
			return true
		}); err != nil {
			return nil, nil, stop, fmt.Errorf("sellers' cluster: %w", err)
		}
	}
	return srvs, rdb, stop, nil
}

// LimitRow is what one user got through the per-user rate limit of a
// region's sellers, buying as fast as it could for a while.
type LimitRow struct {
	Gossip  bool    `json:"gossip"`
	Sellers int     `json:"sellers"`
	Spray   bool    `json:"spray"` // round robin over all sellers, or one seller only
	Rate    float64 `json:"configured_per_s"`
	Got     float64 `json:"admitted_per_s"` // answers other than 429
}

// userLimit measures one user's admitted requests per second against the
// per-user limit (rate per second, burst 1): spraying every seller or
// sticking to one, with the sellers gossiping (each enforces 1/n of the
// limit) or not (each enforces all of it).
func userLimit(ctx context.Context, withGossip, spray bool, sellers int, rate float64, d time.Duration) (LimitRow, error) {
	row := LimitRow{Gossip: withGossip, Sellers: sellers, Spray: spray, Rate: rate}
	const sale = "limit-sale"
	srvs, _, stop, err := sellerCluster(ctx, sellers, withGossip, func(cfg *regional.Config) {
		cfg.UserRate, cfg.UserBurst = rate, 1
		// Stock to spare: a dry region answers from memory, before the
		// limiter; the user's repeats reach Redis (answered duplicate).
		cfg.Sales = []layout.SaleSpec{{ID: sale, Total: 1000, PerUserLimit: 1, StartsAt: time.Now().Add(-time.Minute), ReservationTTL: time.Hour}}
		cfg.StaticGrants = map[string]int64{sale: 1000}
	})
	defer stop()
	if err != nil {
		return row, err
	}
	admitted := 0
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		srv := srvs[0]
		if spray {
			srv = srvs[i%len(srvs)]
		}
		code, err := devBuy(ctx, "http://"+srv.Addr(), sale, "sprayer")
		if err != nil {
			return row, err
		}
		if code != http.StatusTooManyRequests {
			admitted++
		}
	}
	row.Got = float64(admitted) / time.Since(start).Seconds()
	return row, nil
}

// scriptCalls is how many scripts Redis has run and how many commands
// it has processed in all (INFO commandstats; the INFO calls themselves
// are left out).
func scriptCalls(ctx context.Context, rdb *redis.Client) (scripts, commands int64, err error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		c, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("commandstats %q: %w", line, err)
		}
		switch name {
		case "cmdstat_info":
		case "cmdstat_evalsha", "cmdstat_eval":
			scripts += c
			commands += c
		default:
			commands += c
		}
	}
	return scripts, commands, nil
}

func printGossip(w io.Writer, g *GossipResults) {
	defer func() {
		for _, r := range g.Limits {
			mode, how := "without gossip", "one seller"
			if r.Gossip {
				mode = "with gossip   "
			}
			if r.Spray {
				how = fmt.Sprintf("all %d sellers", r.Sellers)
			}
			fmt.Fprintf(w, "  one user limited to %.0f/s, %s, buying from %s: %.1f admitted/s (%.2f of the limit)\n",
				r.Rate, mode, how, r.Got, r.Got/r.Rate)
		}
	}()
	fmt.Fprintln(w, "Group 6: gossip between a region's sellers (memberlist, local preset, loopback)")
	for _, s := range g.Spread {
		fmt.Fprintf(w, "  spread to all of %2d members: p50 %s p99 %s (%d states)\n", s.Members, s.P50.Round(time.Millisecond), s.P99.Round(time.Millisecond), s.Messages)
	}
	fmt.Fprintf(w, "  a member killed without a goodbye, dropped by all 9 others after %s\n", g.Detect.Round(10*time.Millisecond))
	for _, r := range g.AfterSellout {
		mode := "without gossip"
		if r.Gossip {
			mode = "with gossip   "
		}
		fmt.Fprintf(w, "  the second after a sellout, %s, counters read every %-5s: %3d scripts for %d buy attempts at %d other sellers (%.3f per attempt); with no buyer %d Redis commands/s\n",
			mode, r.Refresh, r.Scripts, r.Attempts, r.Sellers-1, r.PerBuy, r.IdleCommands)
	}
}

// devBuy posts one buy to a seller with the insecure dev identity (the
// user is taken from the body) and returns the HTTP status.
func devBuy(ctx context.Context, base, sale, user string) (int, error) {
	body, _ := json.Marshal(map[string]string{"itemId": sale, "userId": user, "requestId": "r-" + user})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/flash-sale/buy", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
