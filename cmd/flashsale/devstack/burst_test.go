package devstack

import (
	"testing"
	"time"
)

// TestOpeningBurstSellsTheStock is DESIGN L1 on the real stack (embedded
// etcd, coordinator, three real Redis, agents and two sellers a region):
// three buyers per unit arrive within 300 ms of the opening, spread evenly
// or 90/5/5, each retrying with the same requestId as the answers' hints
// say (at most 30 times, within 12 s). At least 99% of the stock is
// reserved, never more than the stock (the invariant checker polls I1-I4
// throughout), and no buyer is told 410 sold_out while a unit is unsold.
// Counts, not times: the times are logged, and measured in make bench.
func TestOpeningBurstSellsTheStock(t *testing.T) {
	for _, tc := range []struct {
		name string
		skew []float64
	}{
		{"uniform", nil},
		{"90-5-5", []float64{90, 5, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 300
			s := startBurstStack(t, total)
			stop := watchInvariants(t, s)
			rep, err := s.Burst(t.Context(), BurstOptions{Buyers: 3 * total, Spread: 300 * time.Millisecond,
				Skew: tc.skew, Retries: 30, Deadline: 12 * time.Second, Seed: 1})
			stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("reserved %d of %d; answers %v; sellout %v; share by 1 s %.3f, by 5 s %.3f; retries p50 %d p99 %d; dry spells %d, waited p50 %v p99 %v; granted %d released %d",
				rep.Reserved, rep.Total, rep.Answers, Quantile(rep.ReservedAt, 1), rep.ShareBy(time.Second), rep.ShareBy(5*time.Second),
				Quantile(rep.Retries, 0.5), Quantile(rep.Retries, 0.99), len(rep.DryWaits), Quantile(rep.DryWaits, 0.5), Quantile(rep.DryWaits, 0.99),
				rep.Granted, rep.Released)
			if rep.Reserved > total {
				t.Fatalf("%d reservations for %d units", rep.Reserved, total)
			}
			if rep.Reserved*100 < total*99 {
				t.Errorf("the burst reserved %d of %d units, under 99%%", rep.Reserved, total)
			}
			if rep.SoldOutWhileStock > 0 {
				t.Errorf("%d buyers told sold_out while the sale had unsold units (sold %d of %d)", rep.SoldOutWhileStock, rep.Sold, total)
			}
			if rep.Answers["reserved"] != rep.Reserved || len(rep.Retries) != 3*total {
				t.Errorf("buyers unaccounted for: %d reserved answers, %d buyers finished", rep.Answers["reserved"], len(rep.Retries))
			}
		})
	}
}

// startBurstStack starts a stack whose demo sale opens 2 s later, after
// the split: the regions hold their quota at the opening second.
func startBurstStack(t *testing.T, total int64) *Stack {
	t.Helper()
	return startStackOpening(t, total, 2*time.Second)
}
