package orders

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
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

// A store migrated before 0002 (with the unique index on live orders per
// user) drops the index when it opens, so a user's second order lands.
func TestMigration0002DropsThePerUserIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations("sqlite")
	if err != nil || len(ms) < 2 || ms[0].version != 1 {
		t.Fatalf("migrations = %v, %v", ms, err)
	}
	for _, q := range []string{
		sqliteDialect.schemaMigrations, ms[0].sql,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '0001_orders.sql', 0)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.Close()
	s := openTestStore(t, "sqlite://"+path)
	ctx := context.Background()
	if err := s.Apply(ctx, Batch{Events: []Event{ev("reserved", "1", "u1", 1, 100), ev("reserved", "2", "u1", 2, 100)}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Orders(ctx, "s1", "eu"); len(got) != 2 {
		t.Fatalf("rows = %+v, want 2", got)
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

// The per-user limit is Redis's to enforce (DESIGN I3) and may be above 1:
// every order of a user in a sale lands as a row, live or not, in one
// region or several, and none goes to order_rejects.
func TestEveryOrderOfAUserLandsAsARow(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		other := ev("reserved", "3", "u1", 3, 100)
		other.Region, other.StreamID = "us", "0-3-us"
		batch := Batch{Events: []Event{
			ev("reserved", "1", "u1", 1, 100),
			ev("reserved", "2", "u1", 2, 100), // a second live order: limit >= 2
			ev("confirmed", "1", "u1", 4, 0),
			other,
		}}
		for range 2 { // a replay changes nothing
			if err := s.Apply(ctx, batch); err != nil {
				t.Fatal(err)
			}
			got, err := s.Orders(ctx, "s1", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got[0].Resv != "1" || got[0].State != Confirmed || got[1].Resv != "2" || got[1].State != Reserved ||
				got[2].Resv != "3" || got[2].Region != "us" || got[2].State != Reserved {
				t.Fatalf("rows = %+v, want eu/1 confirmed, eu/2 reserved, us/3 reserved, all u1", got)
			}
			for _, o := range got {
				if o.User != "u1" {
					t.Errorf("resv %s user %q, want u1", o.Resv, o.User)
				}
			}
			if rej, err := s.Rejects(ctx, "s1"); err != nil || len(rej) != 0 {
				t.Fatalf("rejects = %+v, %v; want none", rej, err)
			}
		}
	})
}

// A batch larger than one statement, with a reservation's events spread
// over it, lands whole.
func TestLargeBatchSpansStatements(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		const n = 2*upsertRows + 7
		var b Batch
		for i := range n {
			b.Events = append(b.Events, ev("reserved", strconv.Itoa(i), "u"+strconv.Itoa(i%3), int64(i+1), 10_000))
		}
		for i := 0; i < n; i += 2 {
			b.Events = append(b.Events, ev("confirmed", strconv.Itoa(i), "u", int64(n+i), 0))
		}
		if err := s.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, err := s.Orders(ctx, "s1", "eu")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("%d rows, want %d", len(got), n)
		}
		for _, o := range got {
			i, _ := strconv.Atoi(o.Resv)
			want := Reserved
			if i%2 == 0 {
				want = Confirmed
			}
			if o.State != want || o.User != "u"+strconv.Itoa(i%3) || !o.CreatedAt.Equal(msTime(int64(i+1))) {
				t.Fatalf("row %+v, want %s by u%d created at %d", o, want, i%3, i+1)
			}
		}
	})
}
