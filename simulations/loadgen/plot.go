package loadgen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// ErrNothingToPlot is returned for a timeline without the points a plot
// needs: an empty image would look like a run where nothing happened.
var ErrNothingToPlot = errors.New("nothing to plot")

// WritePlots writes latency.png, stock.png and quota.png into dir (made if
// missing) from a run's buckets and stock samples.
func WritePlots(dir string, bs []Bucket, stock []StockPoint) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	if err := PlotLatency(filepath.Join(dir, "latency.png"), bs); err != nil {
		return err
	}
	if err := PlotStock(filepath.Join(dir, "stock.png"), stock); err != nil {
		return err
	}
	return PlotQuota(filepath.Join(dir, "quota.png"), stock)
}

// PlotLatency draws p50, p99 and p99.9 of each bucket's attempts. Buckets
// without attempts are left out rather than drawn as zero latency.
func PlotLatency(path string, bs []Bucket) error {
	var p50, p99, p999 plotter.XYs
	for _, b := range bs {
		if b.Attempts == 0 {
			continue
		}
		x := b.Start.Seconds()
		p50 = append(p50, plotter.XY{X: x, Y: msOf(b.P50)})
		p99 = append(p99, plotter.XY{X: x, Y: msOf(b.P99)})
		p999 = append(p999, plotter.XY{X: x, Y: msOf(b.P999)})
	}
	if len(p50) == 0 {
		return fmt.Errorf("latency plot: %w: no bucket has attempts", ErrNothingToPlot)
	}
	return save(path, "Latency of attempts over time", "latency (ms)",
		"p50", p50, "p99", p99, "p99.9", p999)
}

// PlotStock draws each region's remaining stock (ceiling - sold -
// reserved) and their sum.
func PlotStock(path string, stock []StockPoint) error {
	lines := perRegion(stock, func(r RegionStock) int64 { return r.Remaining })
	if len(lines) == 0 {
		return fmt.Errorf("stock plot: %w: no stock samples (they need -redis)", ErrNothingToPlot)
	}
	var total plotter.XYs
	for _, p := range stock {
		total = append(total, plotter.XY{X: p.At.Seconds(), Y: float64(p.Remaining)})
	}
	return save(path, "Remaining stock per region", "units left", append(lines, "all regions", total)...)
}

// PlotQuota draws each region's ceiling, granted_seen - released_local:
// the quota the coordinator has granted it net of what it gave back.
func PlotQuota(path string, stock []StockPoint) error {
	lines := perRegion(stock, func(r RegionStock) int64 { return r.Ceiling })
	if len(lines) == 0 {
		return fmt.Errorf("quota plot: %w: no ledger samples (they need -redis)", ErrNothingToPlot)
	}
	return save(path, "Quota per region (granted - released)", "units", lines...)
}

// perRegion returns name, XYs pairs for plotutil.AddLines, one per region
// in the order regions first appear.
func perRegion(stock []StockPoint, y func(RegionStock) int64) []any {
	idx := map[string]int{}
	var names []string
	var xys []plotter.XYs
	for _, p := range stock {
		for _, r := range p.Regions {
			i, ok := idx[r.Region]
			if !ok {
				i = len(names)
				idx[r.Region] = i
				names = append(names, r.Region)
				xys = append(xys, nil)
			}
			xys[i] = append(xys[i], plotter.XY{X: p.At.Seconds(), Y: float64(y(r))})
		}
	}
	out := make([]any, 0, 2*len(names))
	for i, n := range names {
		out = append(out, n, xys[i])
	}
	return out
}

func save(path, title, yLabel string, lines ...any) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "time since start (s)"
	p.Y.Label.Text = yLabel
	p.Y.Min = 0 // a flat line near its value would hide how far from zero it is
	p.Title.Padding = vg.Points(6)
	p.Legend.Top = true
	p.Legend.Padding = vg.Points(3) // entries touch without it
	p.Legend.XOffs = -vg.Points(6)
	p.Add(plotter.NewGrid())
	if err := plotutil.AddLines(p, lines...); err != nil {
		return fmt.Errorf("plot %s: %w", filepath.Base(path), err)
	}
	if err := p.Save(24*vg.Centimeter, 14*vg.Centimeter, path); err != nil {
		return fmt.Errorf("plot %s: %w", filepath.Base(path), err)
	}
	return nil
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
