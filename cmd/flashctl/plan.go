package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"flashsale/coordinator/api"
)

func planTable(w io.Writer, p *api.Plan) {
	verb := "plan"
	if p.Applied {
		verb = "applied"
	}
	row(w, "SALE", p.Sale, verb, fmt.Sprintf("rev %d", p.AllocRevision))
	if p.Note != "" {
		row(w, "NOTE", p.Note)
	}
	if len(p.Grants)+len(p.Releases) == 0 {
		row(w, "nothing to do")
		return
	}
	row(w, "STEP", "REGION", "UNITS", "TO", "ID")
	for _, r := range p.Releases {
		to := r.To
		if to == "" {
			to = "(pool)"
		}
		row(w, "release", r.Region, r.Units, to, r.Id)
	}
	for _, gr := range p.Grants {
		row(w, "grant", gr.Region, gr.Units, "-", "-")
	}
}

// waitReleases shows a progress bar until the releases of the plans are
// acknowledged by their regions, or the wait times out.
func waitReleases(ctx context.Context, out io.Writer, wait time.Duration, plans ...*api.Plan) error {
	pending := map[string]map[string]bool{} // sale -> release ids
	n := 0
	for _, p := range plans {
		for _, r := range p.Releases {
			if pending[p.Sale] == nil {
				pending[p.Sale] = map[string]bool{}
			}
			pending[p.Sale][r.Id] = true
			n++
		}
	}
	if n == 0 || wait <= 0 {
		return nil
	}
	bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription("releases acknowledged"),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }))
	deadline := time.Now().Add(wait)
	for {
		done := 0
		err := call(ctx, func(ctx context.Context, c *client) error {
			for sale, ids := range pending {
				st, err := c.SaleStatus(ctx, &api.SaleRef{Id: sale})
				if err != nil {
					return err
				}
				still := map[string]bool{}
				for _, r := range st.Regions {
					still[r.PendingReleaseId] = true
				}
				for id := range ids {
					if !still[id] {
						done++
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		_ = bar.Set(done)
		if done == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d releases not acknowledged after %v: are the regions' agents alive? (`flashctl readiness`)", n-done, n, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
