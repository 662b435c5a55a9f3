package bench

import (
	"strings"
	"testing"
	"time"

	"flashsale/regional"
	"flashsale/simulations/loadgen"
)

// reservedEvery returns samples of reservations answered every step from
// `from` to `to` (answer times; each took 10 ms).
func reservedEvery(from, to, step time.Duration) []loadgen.Sample {
	var out []loadgen.Sample
	for t := from; t < to; t += step {
		out = append(out, loadgen.Sample{Outcome: loadgen.OutcomeReserved, At: t - 10*time.Millisecond, Latency: 10 * time.Millisecond})
	}
	return out
}

// The goodput of a point is the reservations answered within its window
// over the window's length: an attempt that waited out a retry hint and
// finished seconds after the deadline neither counts nor stretches the
// window (it did, and an overloaded point read 4x too low).
func TestSummarizeCountsAnswersWithinTheWindow(t *testing.T) {
	plan := loadgen.Plan{Workers: 10, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond}
	samples := reservedEvery(0, 2*time.Second, time.Millisecond) // 1,000/s for the whole run
	samples = append(samples,
		// Started in the window, shed, waited 5 s, reserved on retry.
		loadgen.Sample{Outcome: loadgen.OutcomeReserved, At: 1900 * time.Millisecond, Latency: 5 * time.Second, LastTry: 20 * time.Millisecond},
		loadgen.Sample{Outcome: regional.CodeOverloaded, At: time.Second, Latency: 30 * time.Millisecond},
	)
	rep := &loadgen.Report{Mode: "closed", Samples: samples, Window: 7 * time.Second}
	p := summarize("closed_10", plan, rep)
	if p.Goodput < 999 || p.Goodput > 1001 {
		t.Errorf("goodput %.1f/s: want 1,000/s (the late reservation is outside the window)", p.Goodput)
	}
	if p.Answers < 1000 || p.Answers > 1002 {
		t.Errorf("answers %.1f/s: want about 1,000/s", p.Answers)
	}
	if p.Outcomes[regional.CodeOverloaded] != 1 || p.Outcomes[loadgen.OutcomeReserved] != 1491 {
		t.Errorf("outcomes %v: want the attempts started in the window (1,490 + the late one, and one shed)", p.Outcomes)
	}
	if p.P99Admitted > 20*time.Millisecond {
		t.Errorf("p99 admitted %v: want the admitted try's own latency, not the hint's wait", p.P99Admitted)
	}
}

func TestRecoveryTime(t *testing.T) {
	const peak = 1000.0
	d := 2 * time.Second
	gap := 300 * time.Millisecond
	cases := []struct {
		name    string
		samples []loadgen.Sample
		want    time.Duration
	}{
		{"at peak from the start", reservedEvery(0, d, time.Millisecond), gap},
		{"slow first 700 ms", append(reservedEvery(0, 700*time.Millisecond, 10*time.Millisecond),
			reservedEvery(700*time.Millisecond, d, time.Millisecond)...), gap + 700*time.Millisecond},
		// The bug this replaces: one window at the peak, then half of it,
		// read as recovered at 0 s.
		{"one good window then half", append(reservedEvery(0, 500*time.Millisecond, time.Millisecond),
			reservedEvery(500*time.Millisecond, d, 2*time.Millisecond)...), -1},
		{"never", reservedEvery(0, d, 2*time.Millisecond), -1},
		// Answers after the run's deadline are not steady state.
		{"only after the deadline", reservedEvery(d, 2*d, time.Millisecond), -1},
	}
	for _, c := range cases {
		if got := recoveryTime(c.samples, peak, d, gap); got != c.want {
			t.Errorf("%s: recovery %v, want %v", c.name, got, c.want)
		}
	}
	if got := recoveryTime(reservedEvery(0, d, time.Millisecond), 0, d, gap); got != -1 {
		t.Errorf("no peak: recovery %v, want -1", got)
	}
}

// A run whose goodput never came back prints so, not "0s" (-1 ns rounded).
func TestPrintGoodputRecoveryNotBack(t *testing.T) {
	var b strings.Builder
	printGoodput(&b, &GoodputResults{Peak: 1000, PeakAt: 64, Recovery: -1,
		Ratios: []Ratio{{Name: "recovery_s", Value: recoverySeconds(-1), Target: 2}}})
	out := b.String()
	if !strings.Contains(out, "back to 0.9 of it: not within the recovery run") || strings.Contains(out, " 0s ") {
		t.Errorf("output:\n%s\nwant the recovery reported as not back", out)
	}
	if !strings.Contains(out, "target recovery_s -1.000: NOT MET") {
		t.Errorf("output:\n%s\nwant recovery_s -1 NOT MET", out)
	}
}

// The store-bound reference prints its ratio at the largest point against
// its own peak, wherever that peak was, and its phantoms.
func TestPrintGoodputStoreBound(t *testing.T) {
	var b strings.Builder
	printGoodput(&b, &GoodputResults{Peak: 1000, PeakAt: 64, StoreDelay: 10 * time.Millisecond, StoreBound: []GoodputPoint{
		{Conns: 64, Goodput: 1900},
		{Conns: 1000, Goodput: 4000, Phantoms: 2},
		{Conns: 8000, Goodput: 3000, P99Admitted: 120 * time.Millisecond},
	}})
	out := b.String()
	for _, want := range []string{"Redis 10ms away each way", "8000: 3000/s p99 admitted 120", "8000 connections 0.750 of its peak (at 1000), phantoms 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output:\n%s\nwant %q", out, want)
		}
	}
}
