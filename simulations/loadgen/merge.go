package loadgen

import "time"

// Merge combines reports of the same target measured in several slices
// (interleaved with other targets, so that a machine's drift hits every
// target alike). Every sample of every report counts: run the slices
// without warmup. Window and attempts add up; percentiles are recomputed
// from all samples.
func Merge(reps ...*Report) *Report {
	out := &Report{ByOutcome: map[string]Latency{}, Errors: map[string]int{}}
	var lat latencies
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
		for k, n := range r.Answers {
			if out.Answers == nil {
				out.Answers = map[string]int{}
			}
			out.Answers[k] += n
		}
		for _, s := range r.Samples {
			if s.At < r.Warmup {
				continue
			}
			lat.add(s)
		}
		out.Samples = append(out.Samples, r.Samples...)
	}
	lat.fill(out)
	out.RetriesP50, out.RetriesP99, out.RetriesMax = retryPercentiles(out.Samples, 0)
	if out.Window > 0 {
		out.Throughput = float64(out.Attempts) / out.Window.Seconds()
	}
	return out
}
