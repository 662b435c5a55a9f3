package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"flashsale/cmd/flashsale/devstack"
)

// QuotaResults is group 5: quota where the buyers are, on the whole dev
// stack (embedded etcd, coordinator, three real Redis, agents, two sellers
// a region): the opening burst, even and skewed, and a steady, even sale.
type QuotaResults struct {
	Bursts []BurstRow `json:"bursts"`
	Steady SteadyRow  `json:"steady"`
}

// BurstRow is one opening burst: three buyers a unit within 300 ms of the
// opening, retrying on the answers' hints.
type BurstRow struct {
	Skew             string        `json:"skew"`
	Total            int64         `json:"total"`
	Reserved         int64         `json:"reserved"`
	Sellout          time.Duration `json:"sellout_ns"` // opening to the last unit reserved
	ShareBy1s        float64       `json:"share_by_1s"`
	ShareBy5s        float64       `json:"share_by_5s"`
	RetriesP50       int           `json:"retries_p50"`
	RetriesP99       int           `json:"retries_p99"`
	DryWaitP50       time.Duration `json:"dry_wait_p50_ns"`
	DryWaitP99       time.Duration `json:"dry_wait_p99_ns"`
	DrySpells        int           `json:"dry_spells"`
	SoldOutWithStock int64         `json:"sold_out_with_stock"`
	Released         int64         `json:"released"`
}

// SteadyRow is the steady, even sale: 1,200 attempts a second over three
// regions. Targets: released per sold <= 0.1, etcd writes per 1,000
// purchases <= 10 (every writer).
type SteadyRow struct {
	Total           int64         `json:"total"`
	Reserved        int64         `json:"reserved"`
	Took            time.Duration `json:"took_ns"`
	Granted         int64         `json:"granted"`
	Released        int64         `json:"released"`
	ReleasedPerSold float64       `json:"released_per_sold"`
	WritesPer1000   float64       `json:"etcd_writes_per_1000"`
}

// runQuota runs group 5; quick runs smaller sales.
func runQuota(ctx context.Context, quick bool, log *slog.Logger) (*QuotaResults, error) {
	burstTotal, steadyTotal := int64(1000), int64(10000)
	if quick {
		burstTotal = 300
	}
	start := func(total int64) (*devstack.Stack, error) {
		return devstack.Start(ctx, devstack.Options{Regions: []string{"us", "eu", "ap"}, Sellers: 2,
			DemoTotal: total, DemoStart: 2 * time.Second, DemoTTL: time.Minute, Logger: quiet(log)})
	}
	res := &QuotaResults{}
	for _, sk := range []struct {
		name string
		w    []float64
	}{{"uniform", nil}, {"90/5/5", []float64{90, 5, 5}}} {
		log.Info("bench: quota burst", "skew", sk.name, "units", burstTotal)
		s, err := start(burstTotal)
		if err != nil {
			return nil, fmt.Errorf("bench: quota burst: %w", err)
		}
		r, err := s.Burst(ctx, devstack.BurstOptions{Buyers: int(3 * burstTotal), Spread: 300 * time.Millisecond,
			Skew: sk.w, Retries: 30, Deadline: 12 * time.Second, Seed: 1})
		_ = s.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: quota burst: %w", err)
		}
		res.Bursts = append(res.Bursts, BurstRow{Skew: sk.name, Total: r.Total, Reserved: r.Reserved,
			Sellout: devstack.Quantile(r.ReservedAt, 1), ShareBy1s: r.ShareBy(time.Second), ShareBy5s: r.ShareBy(5 * time.Second),
			RetriesP50: devstack.Quantile(r.Retries, 0.5), RetriesP99: devstack.Quantile(r.Retries, 0.99),
			DryWaitP50: devstack.Quantile(r.DryWaits, 0.5), DryWaitP99: devstack.Quantile(r.DryWaits, 0.99),
			DrySpells: len(r.DryWaits), SoldOutWithStock: r.SoldOutWhileStock, Released: r.Released})
	}
	log.Info("bench: quota steady", "units", steadyTotal)
	s, err := start(steadyTotal)
	if err != nil {
		return nil, fmt.Errorf("bench: quota steady: %w", err)
	}
	r, err := s.Steady(ctx, 1200, 60*time.Second)
	_ = s.Close()
	if err != nil {
		return nil, fmt.Errorf("bench: quota steady: %w", err)
	}
	res.Steady = SteadyRow{Total: r.Total, Reserved: r.Reserved, Took: r.Took, Granted: r.Granted, Released: r.Released,
		ReleasedPerSold: r.ReleasedPerSold(), WritesPer1000: r.WritesPer1000()}
	return res, nil
}

// quiet keeps the stacks' own info logs out of the bench's output.
func quiet(log *slog.Logger) *slog.Logger {
	return slog.New(discardBelow{h: log.Handler(), min: slog.LevelWarn})
}

type discardBelow struct {
	h   slog.Handler
	min slog.Level
}

func (d discardBelow) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= d.min && d.h.Enabled(ctx, l)
}
func (d discardBelow) Handle(ctx context.Context, r slog.Record) error { return d.h.Handle(ctx, r) }
func (d discardBelow) WithAttrs(a []slog.Attr) slog.Handler {
	return discardBelow{h: d.h.WithAttrs(a), min: d.min}
}
func (d discardBelow) WithGroup(n string) slog.Handler {
	return discardBelow{h: d.h.WithGroup(n), min: d.min}
}

func printQuota(w io.Writer, q *QuotaResults) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "burst\tunits\treserved\tsellout\tby 1 s\tby 5 s\tretries p50/p99\tdry spells\tdry wait p50/p99\tsold_out with stock\treleased\n")
	for _, b := range q.Bursts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.3f\t%.3f\t%d/%d\t%d\t%s/%s\t%d\t%d\n", b.Skew, b.Total, b.Reserved, ms(b.Sellout),
			b.ShareBy1s, b.ShareBy5s, b.RetriesP50, b.RetriesP99, b.DrySpells, ms(b.DryWaitP50), ms(b.DryWaitP99), b.SoldOutWithStock, b.Released)
	}
	_ = tw.Flush()
	st := q.Steady
	fmt.Fprintf(w, "steady even sale, 1,200 attempts/s over 3 regions: %d of %d reserved in %s; granted %d, released %d: released/sold %.3f (target <= 0.1: %s); etcd writes per 1,000 purchases %.1f (target <= 10: %s)\n",
		st.Reserved, st.Total, st.Took.Round(time.Millisecond), st.Granted, st.Released, st.ReleasedPerSold, met(st.ReleasedPerSold <= 0.1),
		st.WritesPer1000, met(st.WritesPer1000 <= 10))
	for _, b := range q.Bursts {
		fmt.Fprintf(w, "burst %s: reserved %.1f%% (target >= 99%%: %s), sold_out with stock %d (target 0: %s)\n", b.Skew,
			100*float64(b.Reserved)/float64(max(1, b.Total)), met(b.Reserved*100 >= b.Total*99), b.SoldOutWithStock, met(b.SoldOutWithStock == 0))
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}
