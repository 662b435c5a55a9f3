package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// One coordinator, one sale, updated step by step the way Terraform and
// `flashctl sale update` do: raise, lower within the pool, lower through
// releases, refusals that name the numbers, drained regions left drained,
// nothing after the end. The checker watches I2 throughout.
func TestUpdateSale(t *testing.T) {
	// The figures below assume an 80% split (400 and 400 of 1000).
	_, cli, c := startLeader(t, quiet, func(c *Config) { c.Policy.SplitPercent = 80 })
	cl := dial(t, c.Addr())
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	sale := testSale("u1", 1000, &api.RegionSpec{Name: "eu", Weight: 1}, &api.RegionSpec{Name: "us", Weight: 1})
	if _, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: sale}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "u1") // 400 and 400
	update := func(mod func(s *api.Sale), wait time.Duration) (*api.Sale, error) {
		cur, err := cl.GetSale(ctx, &api.GetSaleRequest{Id: "u1"})
		if err != nil {
			t.Fatal(err)
		}
		s := proto.Clone(cur).(*api.Sale)
		mod(s)
		return cl.UpdateSale(ctx, &api.UpdateSaleRequest{Sale: s, ReleaseWait: durationpb.New(wait)})
	}

	t.Run("raise total, weights, max, window", func(t *testing.T) {
		ends := time.Now().Add(2 * time.Hour).Truncate(time.Second)
		got, err := update(func(s *api.Sale) {
			s.Total = 1500
			s.Regions[0].Weight = 3
			s.Regions[1].Max = 900
			s.EndsAt = timestamppb.New(ends)
			s.State = "paused" // ignored: run state is not the definition
		}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Total != 1500 || got.State != "active" || !got.EndsAt.AsTime().Equal(ends) {
			t.Fatalf("UpdateSale answered %+v", got)
		}
		a, _ := readAlloc(t, cli, "u1")
		if a.Total != 1500 || a.Regions["eu"].Weight != 3 || a.Regions["us"].Max != 900 || a.Unallocated() != 700 {
			t.Fatalf("allocation: total %d eu %+v us %+v unallocated %d", a.Total, *a.Regions["eu"], *a.Regions["us"], a.Unallocated())
		}
	})

	t.Run("lower within the pool", func(t *testing.T) {
		if _, err := update(func(s *api.Sale) { s.Total = 900 }, 0); err != nil {
			t.Fatal(err)
		}
		if a, _ := readAlloc(t, cli, "u1"); a.Total != 900 || a.SumNet() != 800 {
			t.Fatalf("total %d sum net %d", a.Total, a.SumNet())
		}
	})

	eu.report("u1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 350, Reserved: 10}})
	us.report("u1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 100}})

	t.Run("lower below what is held is refused with the numbers", func(t *testing.T) {
		_, err := update(func(s *api.Sale) { s.Total = 400 }, 0)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("err %v, want FailedPrecondition", err)
		}
		for _, want := range []string{"from 900 to 400", "460 units the regions hold", "450 sold", "10 reserved", "lowest total now is 460"} {
			if !strings.Contains(status.Convert(err).Message(), want) {
				t.Errorf("message %q lacks %q", status.Convert(err).Message(), want)
			}
		}
	})

	t.Run("lower not acknowledged in time", func(t *testing.T) {
		_, err := update(func(s *api.Sale) { s.Total = 700 }, 150*time.Millisecond)
		if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "us releasing 100") {
			t.Fatalf("err %v, want Aborted waiting for us", err)
		}
	})

	t.Run("lower through releases", func(t *testing.T) {
		// Play us's agent: run the pending release and acknowledge it.
		acked := make(chan struct{})
		go func() {
			defer close(acked)
			for t.Context().Err() == nil {
				a, _ := readAlloc(t, cli, "u1")
				if p := a.Regions["us"].Pending; p != nil && p.Units == 200 {
					us.report("u1", layout.RegionReport{ReleaseID: p.ID, Report: quota.Report{GrantedSeen: 400, Sold: 100, ReleasedLocal: p.Units}})
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		// The earlier call's release (100) is still pending: this one asks
		// nothing more of us until it is acked, then the rest.
		a, _ := readAlloc(t, cli, "u1")
		if p := a.Regions["us"].Pending; p != nil {
			us.report("u1", layout.RegionReport{ReleaseID: p.ID, Report: quota.Report{GrantedSeen: 400, Sold: 100, ReleasedLocal: 0}})
		}
		got, err := update(func(s *api.Sale) { s.Total = 600 }, 10*time.Second)
		select {
		case <-acked:
		case <-time.After(10 * time.Second):
			t.Fatal("us's release of 200 was never requested")
		}
		if err != nil {
			t.Fatal(err)
		}
		a, _ = readAlloc(t, cli, "u1")
		if got.Total != 600 || a.Total != 600 || a.SumNet() != 600 || a.Regions["us"].Net() != 200 {
			t.Fatalf("answered total %d; allocation total %d sum net %d us %+v", got.Total, a.Total, a.SumNet(), *a.Regions["us"])
		}
	})

	t.Run("what cannot change in place", func(t *testing.T) {
		for name, tc := range map[string]struct {
			mod  func(s *api.Sale)
			code codes.Code
			msg  string
		}{
			"per-user limit": {func(s *api.Sale) { s.PerUserLimit = 2 }, codes.FailedPrecondition, "per-user limit 1 cannot change in place to 2"},
			"regions":        {func(s *api.Sale) { s.Regions = append(s.Regions, &api.RegionSpec{Name: "ap"}) }, codes.FailedPrecondition, "it has eu,us, asked for ap,eu,us): create a sale with a new id"},
			"start, opened":  {func(s *api.Sale) { s.StartsAt = timestamppb.New(time.Now().Add(time.Hour)) }, codes.FailedPrecondition, "its start can no longer change"},
			"end in the past": {func(s *api.Sale) {
				s.StartsAt = timestamppb.New(s.StartsAt.AsTime().Add(-time.Hour))
				s.EndsAt = timestamppb.New(time.Now().Add(-time.Minute))
			}, codes.FailedPrecondition, "start can no longer change"},
			"bad total": {func(s *api.Sale) { s.Total = 0 }, codes.InvalidArgument, "sale.total: 0 must be positive"},
		} {
			if _, err := update(tc.mod, 0); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: %v, want %v %q", name, err, tc.code, tc.msg)
			}
		}
	})

	t.Run("a drained region stays drained", func(t *testing.T) {
		if _, err := cl.Drain(ctx, &api.DrainRequest{Region: "us", Sale: "u1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := update(func(s *api.Sale) { s.Regions[0].Weight = 5; s.Regions[1].Min = 10 }, 0); err != nil {
			t.Fatal(err)
		}
		a, _ := readAlloc(t, cli, "u1")
		if a.Regions["eu"].Weight != 5 || a.Regions["us"].Weight != 0 || a.Regions["us"].Min != 10 {
			t.Fatalf("eu %+v us %+v", *a.Regions["eu"], *a.Regions["us"])
		}
	})

	t.Run("nothing changes after the end", func(t *testing.T) {
		if _, err := cl.EndSale(ctx, &api.SaleRef{Id: "u1"}); err != nil {
			t.Fatal(err)
		}
		_, err := update(func(s *api.Sale) { s.Total = 5000 }, 0)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "has ended") {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("unknown sale", func(t *testing.T) {
		s := testSale("nope", 10, &api.RegionSpec{Name: "eu"})
		if _, err := cl.UpdateSale(context.WithoutCancel(ctx), &api.UpdateSaleRequest{Sale: s}); status.Code(err) != codes.NotFound {
			t.Fatalf("err %v, want NotFound", err)
		}
	})
}
