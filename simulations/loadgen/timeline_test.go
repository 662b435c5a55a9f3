package loadgen

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestTimelineBuckets(t *testing.T) {
	ms := time.Millisecond
	samples := []Sample{
		{Outcome: OutcomeReserved, At: 10 * ms, Latency: 2 * ms},
		{Outcome: OutcomeReserved, At: 90 * ms, Latency: 4 * ms},
		{Outcome: ConfirmPrefix + "ok", At: 95 * ms, Latency: time.Second}, // follow-ups are not attempts
		{Outcome: OutcomeSoldOut, At: 250 * ms, Latency: 1 * ms},
	}
	stock := []StockPoint{{At: 0, Remaining: 2}, {At: 120 * ms, Remaining: 0}}
	bs := Timeline(samples, 100*ms, stock)
	if len(bs) != 3 {
		t.Fatalf("%d buckets, want 3: %+v", len(bs), bs)
	}
	want := []Bucket{
		{Start: 0, Attempts: 2, Reserved: 2, P50: 2 * ms, P99: 4 * ms, P999: 4 * ms, Max: 4 * ms, Remaining: 2},
		{Start: 100 * ms, Remaining: 0},
		{Start: 200 * ms, Attempts: 1, SoldOut: 1, P50: ms, P99: ms, P999: ms, Max: ms, Remaining: 0},
	}
	for i := range want {
		if bs[i] != want[i] {
			t.Errorf("bucket %d: %+v, want %+v", i, bs[i], want[i])
		}
	}
	var buf bytes.Buffer
	if err := WriteTimelineCSV(&buf, bs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 || lines[1] != "0,2,2,0,2.000,4.000,4.000,2" {
		t.Errorf("csv:\n%s", buf.String())
	}
	if Timeline(nil, ms, nil) != nil || Timeline(samples, 0, nil) != nil {
		t.Error("empty input or zero width must give no buckets")
	}
}
