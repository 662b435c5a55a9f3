package orders

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"flashsale/internal/pgtest"
)

// One PostgreSQL server for the package (pgtest.Fresh); the restart test
// starts its own.
func TestMain(m *testing.M) { os.Exit(pgtest.RunShared(m)) }

// eachStore runs f against a fresh SQLite file and a fresh real PostgreSQL.
func eachStore(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, openTestStore(t, pgtest.Fresh(t)))
	})
}

func openTestStore(t testing.TB, dsn string) Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ev(typ, resv, user string, at, expires int64) Event {
	return Event{StreamID: "0-" + resv + "-" + typ, Type: typ, Sale: "s1", Region: "eu", Resv: resv, User: user, Req: "r" + resv, At: at, ExpiresAt: expires}
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	for _, dsn := range []string{"", "mysql://x", "sqlite://", "redis://localhost"} {
		if _, err := Open(context.Background(), dsn); !errors.Is(err, ErrBadDSN) {
			t.Errorf("Open(%q) = %v, want ErrBadDSN", dsn, err)
		}
	}
}

func TestMigrationsApplyOnce(t *testing.T) {
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "orders.db")
	a := openTestStore(t, dsn)
	if err := a.Apply(context.Background(), Batch{Events: []Event{ev("reserved", "1", "u1", 10, 100)}}); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	b := openTestStore(t, dsn) // migrations already applied: must not fail or wipe
	got, err := b.Orders(context.Background(), "s1", "eu")
	if err != nil || len(got) != 1 {
		t.Fatalf("after reopen: %v %v", got, err)
	}
}

// Every permutation order of one reservation's events, applied any number
// of times, must give the same row: the upsert only moves forward.
func TestUpsertConvergesWhateverTheOrder(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		cases := map[string][]Event{
			"1": {ev("reserved", "1", "u1", 100, 1000), ev("extended", "1", "u1", 200, 2000), ev("confirmed", "1", "u1", 300, 0)},
			"2": {ev("reserved", "2", "u2", 100, 1000), ev("cancelled", "2", "u2", 400, 0)},
			"3": {ev("reserved", "3", "u3", 100, 1000), ev("expired", "3", "u3", 1000, 0)},
			"4": {ev("reserved", "4", "u4", 100, 1000)},
		}
		want := map[string]Order{
			"1": {State: Confirmed, User: "u1", CreatedAt: msTime(100), UpdatedAt: msTime(300), ExpiresAt: msTime(2000)},
			"2": {State: Cancelled, User: "u2", CreatedAt: msTime(100), UpdatedAt: msTime(400), ExpiresAt: msTime(1000)},
			"3": {State: Expired, User: "u3", CreatedAt: msTime(100), UpdatedAt: msTime(1000), ExpiresAt: msTime(1000)},
			"4": {State: Reserved, User: "u4", CreatedAt: msTime(100), UpdatedAt: msTime(100), ExpiresAt: msTime(1000)},
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for round := range 6 {
			var all []Event
			for _, evs := range cases {
				all = append(all, evs...)
				if round%2 == 1 {
					all = append(all, evs...) // replays
				}
			}
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			sale := "s" + string(rune('a'+round))
			for i := range all {
				all[i].Sale = sale
			}
			// One event per transaction, so the order really is the shuffled one.
			for _, e := range all {
				if err := s.Apply(ctx, Batch{Events: []Event{e}}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Orders(ctx, sale, "eu")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("round %d: %d rows, want %d", round, len(got), len(want))
			}
			for _, o := range got {
				w := want[o.Resv]
				if o.State != w.State || o.User != w.User || !o.CreatedAt.Equal(w.CreatedAt) || !o.UpdatedAt.Equal(w.UpdatedAt) || !o.ExpiresAt.Equal(w.ExpiresAt) {
					t.Errorf("round %d resv %s: got %+v, want %+v", round, o.Resv, o, w)
				}
			}
		}
	})
}

func TestTerminalStatesNeverChange(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		batch := Batch{Events: []Event{
			ev("reserved", "1", "u1", 1, 100), ev("confirmed", "1", "u1", 2, 0),
			ev("cancelled", "1", "u1", 3, 0), ev("expired", "1", "u1", 4, 0), ev("reserved", "1", "u1", 5, 100),
		}}
		if err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		got, err := s.Orders(ctx, "s1", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].State != Confirmed {
			t.Fatalf("rows = %+v, want one confirmed", got)
		}
	})
}

// The partial unique index refuses a second live order for a user; the
// batch still commits, the refused event lands in order_rejects, and the
// user can hold a new order once the first one ended.
func TestPerUserIndexRejectsWithoutBlockingTheBatch(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		batch := Batch{Events: []Event{
			ev("reserved", "1", "u1", 1, 100),
			ev("reserved", "2", "u1", 2, 100), // Redis would never allow this
			ev("reserved", "3", "u3", 3, 100),
		}}
		if err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Orders(ctx, "s1", "eu")
		if len(got) != 2 || got[0].Resv != "1" || got[1].Resv != "3" {
			t.Fatalf("rows = %+v, want resv 1 and 3", got)
		}
		rej, err := s.Rejects(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if len(rej) != 1 || rej[0].Resv != "2" {
			t.Fatalf("rejects = %+v, want resv 2", rej)
		}
		// Replaying the same batch changes nothing and does not fail.
		if err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if rej, _ := s.Rejects(ctx, "s1"); len(rej) != 1 {
			t.Fatalf("rejects after replay = %d, want 1", len(rej))
		}
		// After the first order ends the same user may reserve again.
		if err := s.Apply(ctx, Batch{Events: []Event{ev("cancelled", "1", "u1", 4, 0), ev("reserved", "4", "u1", 5, 100)}}); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Orders(ctx, "s1", "eu")
		if len(got) != 3 {
			t.Fatalf("rows = %+v, want 3", got)
		}
	})
}
