package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"flashsale/quota/layout"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
	"flashsale/simulations/invariants"
)

// poller runs the invariant checker against etcd and every Redis, and
// checks the SQL order stores against the ledgers, until stopped. A store
// that cannot be read (it is being killed) is not a violation: the next
// poll reads it again.
type poller struct {
	c    *Cluster
	sale string

	mu         sync.Mutex
	polls      int
	readErrors int
	violations map[string]int // message -> times seen
	stop, done chan struct{}
}

func startPoller(c *Cluster, sale string, every time.Duration) *poller {
	p := &poller{c: c, sale: sale, violations: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			p.pollOnce()
		}
	}()
	return p
}

// pollOnce checks once; it returns the violations it saw.
func (p *poller) pollOnce() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var regions []invariants.Region
	for _, name := range p.c.topo.Regions {
		regions = append(regions, invariants.Region{Name: name, Redis: p.c.regions[name].rdb})
	}
	var found []string
	readErr := false
	if err := invariants.Check(ctx, p.c.cli, layout.DefaultPrefix, regions); err != nil {
		v, other := splitViolations(err)
		found = append(found, v...)
		readErr = other
	}
	for _, name := range p.c.topo.Regions {
		v, err := checkSQL(ctx, p.c.regions[name], p.sale)
		if err != nil {
			readErr = true
		}
		found = append(found, v...)
	}
	p.mu.Lock()
	p.polls++
	if readErr {
		p.readErrors++
	}
	for _, v := range found {
		p.violations[v]++
	}
	p.mu.Unlock()
	return found
}

// splitViolations separates the checker's violations (I1-I4) from errors
// reading a store.
func splitViolations(err error) (violations []string, other bool) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if isViolation(line) {
			violations = append(violations, line)
		} else if strings.TrimSpace(line) != "" {
			other = true
		}
	}
	return violations, other
}

func isViolation(line string) bool {
	for _, tag := range []string{"I1: ", "I2: ", "I3: ", "I4: "} {
		if strings.Contains(line, tag) {
			return true
		}
	}
	return false
}

// checkSQL reads a region's order rows, then its ledger: the rows follow
// the stream, so SQL may confirm fewer units than the ledger sold, never
// more (read in this order, a confirm between the reads cannot look like
// one), and no user holds more than one live row.
//
// A region whose ledger says it is stopped (halted, or a primary its agent
// has not reconciled since a failover or restart: lib.lua's stopped) is
// rebuilding its counters and sells nothing until it resumes, so SQL ahead
// of it then is the reconcile's input, not a violation: it is skipped.
func checkSQL(ctx context.Context, r *region, sale string) ([]string, error) {
	rows, err := r.orders.Orders(ctx, sale, r.name)
	if err != nil {
		return nil, err
	}
	c, err := redisstore.NewStore(r.rdb, r.name).Counters(ctx, sale)
	if err != nil {
		return nil, err
	}
	if c.Stopped() {
		return nil, nil
	}
	sold := c.Sold
	var confirmed int64
	live := map[string]int{}
	for _, o := range rows {
		switch o.State {
		case orders.Confirmed:
			confirmed++
			live[o.User]++
		case orders.Reserved:
			live[o.User]++
		}
	}
	var v []string
	if confirmed > sold {
		v = append(v, fmt.Sprintf("I4: region %s: SQL has %d confirmed orders, the ledger sold %d", r.name, confirmed, sold))
	}
	for u, n := range live {
		if n > 1 {
			v = append(v, fmt.Sprintf("I3: region %s: user %s has %d live order rows in SQL", r.name, u, n))
		}
	}
	return v, nil
}

func (p *poller) Stop() (polls, readErrors int, violations []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range slices.Sorted(maps.Keys(p.violations)) {
		violations = append(violations, fmt.Sprintf("%s (%d polls)", v, p.violations[v]))
	}
	return p.polls, p.readErrors, violations
}
