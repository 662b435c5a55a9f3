package loadgen

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// Bucket is one slice of a run's timeline: the attempts that started in it
// (follow-ups left out), their latencies, and the stock left at its end if
// it was sampled (-1 when not).
type Bucket struct {
	Start              time.Duration
	Attempts, Reserved int
	SoldOut            int
	P50, P99, P999     time.Duration
	Max                time.Duration
	Remaining          int64
}

// Timeline cuts a run's samples into buckets of width d, for plots of
// latency and stock over time.
func Timeline(samples []Sample, d time.Duration, stock []StockPoint) []Bucket {
	if d <= 0 || len(samples) == 0 {
		return nil
	}
	var end time.Duration
	for _, s := range samples {
		end = max(end, s.At)
	}
	n := int(end/d) + 1
	lat := make([][]time.Duration, n)
	out := make([]Bucket, n)
	for i := range out {
		out[i] = Bucket{Start: time.Duration(i) * d, Remaining: -1}
	}
	for _, s := range samples {
		if isFollow(s.Outcome) || s.At < 0 {
			continue
		}
		i := int(s.At / d)
		b := &out[i]
		b.Attempts++
		switch s.Outcome {
		case OutcomeReserved:
			b.Reserved++
		case OutcomeSoldOut:
			b.SoldOut++
		}
		lat[i] = append(lat[i], s.Latency)
	}
	for i := range out {
		l := Summarize(lat[i])
		out[i].P50, out[i].P99, out[i].P999, out[i].Max = l.P50, l.P99, l.P999, l.Max
	}
	// Stock: the last sample taken before each bucket's end.
	j := 0
	var last int64 = -1
	for i := range out {
		for j < len(stock) && stock[j].At < out[i].Start+d {
			last = stock[j].Remaining
			j++
		}
		out[i].Remaining = last
	}
	return out
}

// WriteTimelineCSV writes the buckets as CSV (milliseconds), one header line.
func WriteTimelineCSV(w io.Writer, bs []Bucket) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"t_ms", "attempts", "reserved", "sold_out", "p50_ms", "p99_ms", "max_ms", "remaining"})
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
	for _, b := range bs {
		_ = cw.Write([]string{
			strconv.FormatInt(b.Start.Milliseconds(), 10), strconv.Itoa(b.Attempts), strconv.Itoa(b.Reserved),
			strconv.Itoa(b.SoldOut), ms(b.P50), ms(b.P99), ms(b.Max), strconv.FormatInt(b.Remaining, 10),
		})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("timeline csv: %w", err)
	}
	return nil
}

// StockPoint is the stock left over all regions at a moment of a run,
// and each region's part of it.
type StockPoint struct {
	At        time.Duration
	Remaining int64
	Regions   []RegionStock
}

// RegionStock is one region's ledger at a sample: its ceiling
// (granted_seen - released_local, the quota the coordinator has granted it
// net of releases) and the stock left under it.
type RegionStock struct {
	Region             string
	Ceiling, Remaining int64
}

// StockSampler reads the regions' ledgers every interval while a run goes
// on: remaining = sum over regions of ceiling - sold - reserved.
type StockSampler struct {
	mu     sync.Mutex
	points []StockPoint
	cancel context.CancelFunc
	done   chan struct{}
}

// StartStockSampler starts sampling sale in regions until Stop.
func StartStockSampler(ctx context.Context, regions []RegionRedis, sale string, every time.Duration) *StockSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &StockSampler{cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	sample := func() {
		// Stamped with when the read began: the first point is at 0.
		at := time.Since(start)
		p := StockPoint{At: at, Regions: make([]RegionStock, 0, len(regions))}
		for _, r := range regions {
			rc, err := readLedger(ctx, r, sale)
			if err != nil {
				return // a missed point, not a failed run
			}
			ceil := rc.GrantedSeen - rc.ReleasedLocal
			left := max(0, ceil-rc.Sold-rc.Reserved)
			p.Remaining += left
			p.Regions = append(p.Regions, RegionStock{Region: r.Region, Ceiling: ceil, Remaining: left})
		}
		s.mu.Lock()
		s.points = append(s.points, p)
		s.mu.Unlock()
	}
	// The first point before the run starts: the opening burst would
	// delay it.
	sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the points. Safe on nil.
func (s *StockSampler) Stop() []StockPoint {
	if s == nil {
		return nil
	}
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StockPoint(nil), s.points...)
}
