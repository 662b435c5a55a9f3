package loadgen

import (
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWritePlots(t *testing.T) {
	ms := time.Millisecond
	var bs []Bucket
	var stock []StockPoint
	for i := range 10 {
		at := time.Duration(i) * 100 * ms
		bs = append(bs, Bucket{Start: at, Attempts: 5, P50: ms, P99: 3 * ms, P999: 9 * ms, Max: 9 * ms})
		eu, us := int64(max(0, 30-4*i)), int64(max(0, 20-3*i))
		stock = append(stock, StockPoint{At: at, Remaining: eu + us, Regions: []RegionStock{
			{Region: "eu", Ceiling: 30, Remaining: eu},
			{Region: "us", Ceiling: 20 - int64(i), Remaining: us},
		}})
	}
	bs = append(bs, Bucket{Start: time.Second}) // no attempts: left out, not a zero
	dir := filepath.Join(t.TempDir(), "plots")
	if err := WritePlots(dir, bs, stock); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"latency.png", "stock.png", "quota.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		_ = f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Errorf("%s: %v, want a real image", name, b)
		}
	}
}

func TestPlotsOfEmptyTimelineFail(t *testing.T) {
	dir := t.TempDir()
	idle := []Bucket{{Start: 0}, {Start: time.Second}} // buckets but no attempts
	for name, err := range map[string]error{
		"latency nil":  PlotLatency(filepath.Join(dir, "a.png"), nil),
		"latency idle": PlotLatency(filepath.Join(dir, "b.png"), idle),
		"stock":        PlotStock(filepath.Join(dir, "c.png"), nil),
		"quota":        PlotQuota(filepath.Join(dir, "d.png"), []StockPoint{{At: 0}}),
		"all":          WritePlots(dir, nil, nil),
	} {
		if !errors.Is(err, ErrNothingToPlot) {
			t.Errorf("%s: %v, want ErrNothingToPlot", name, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.png")); len(left) != 0 {
		t.Errorf("empty timelines left images: %v", left)
	}
}
