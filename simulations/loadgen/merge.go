package loadgen

import (
	"sort"
	"time"
)

// Merge combines reports of the same target measured in several slices
// (interleaved with other targets, so that a machine's drift hits every
// target alike). Every sample of every report counts: run the slices
// without warmup. Window and attempts add up; percentiles are recomputed
// from all samples.
func Merge(reps ...*Report) *Report {
	out := &Report{ByOutcome: map[string]Latency{}, Errors: map[string]int{}}
	var all []time.Duration
	by := map[string][]time.Duration{}
	for _, r := range reps {
		if r == nil {
			continue
		}
		out.Mode, out.Rate, out.Workers = r.Mode, r.Rate, r.Workers
		out.Window += r.Window
		out.Dropped += r.Dropped
		out.Reserved += r.Reserved
		if r.SoldOutAfter > 0 && (out.SoldOutAfter == 0 || r.SoldOutAfter < out.SoldOutAfter) {
			out.SoldOutAfter = r.SoldOutAfter
		}
		for region, d := range r.SoldOutAfterByRegion {
			if old, ok := out.SoldOutAfterByRegion[region]; d > 0 && (!ok || d < old) {
				if out.SoldOutAfterByRegion == nil {
					out.SoldOutAfterByRegion = map[string]time.Duration{}
				}
				out.SoldOutAfterByRegion[region] = d
			}
		}
		for k, n := range r.Errors {
			out.Errors[k] += n
		}
		for _, s := range r.Samples {
			if s.At < r.Warmup {
				continue
			}
			by[s.Outcome] = append(by[s.Outcome], s.Latency)
			if !isFollow(s.Outcome) {
				all = append(all, s.Latency)
			}
		}
		out.Samples = append(out.Samples, r.Samples...)
	}
	out.Attempts = len(all)
	out.All = Summarize(all)
	names := make([]string, 0, len(by))
	for k := range by {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out.ByOutcome[k] = Summarize(by[k])
	}
	if out.Window > 0 {
		out.Throughput = float64(out.Attempts) / out.Window.Seconds()
	}
	return out
}
