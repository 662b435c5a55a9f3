package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/regional/redisstore"
	"flashsale/simulations/loadgen"

	"flashsale/internal/pgproc"
)

func smallPop(t *testing.T) *loadgen.Population {
	t.Helper()
	pop, err := loadgen.NewPopulation(1000, []loadgen.RegionWeight{{Name: "eu", Weight: 1}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return pop
}

// The PostgreSQL baseline sells exactly its stock under concurrency and
// records one order per unit; the bench's server stops and leaves nothing.
func TestPGHotRowSellsExactlyItsStock(t *testing.T) {
	ctx := context.Background()
	pg, err := pgproc.Start(ctx, pgproc.Options{Database: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	dir := pg.Dir
	defer pg.Close()
	hot, err := newPGHotRow(ctx, pg.DSN, 4, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer hot.Close()
	rep, err := loadgen.Run(ctx, loadgen.Plan{Workers: 4, Duration: time.Minute, MaxRequests: 20}, smallPop(t), hot, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reserved != 5 || rep.ByOutcome[loadgen.OutcomeSoldOut].Count != 15 {
		t.Fatalf("outcomes %+v errors %v: want 5 reserved, 15 sold out", rep.ByOutcome, rep.Errors)
	}
	var left, orders int64
	if err := hot.pool.QueryRow(ctx, `SELECT remaining, (SELECT count(*) FROM orders) FROM stock WHERE item = 'hot'`).Scan(&left, &orders); err != nil {
		t.Fatal(err)
	}
	if left != 0 || orders != 5 {
		t.Fatalf("remaining %d, orders %d: want 0 and 5", left, orders)
	}
	hot.Close()
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s left behind (%v)", dir, err)
	}
	if err := pg.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// The direct Redis ops answer as the seller's scripts do: the batcher and
// EVALSHA sell the same stock, once per user.
func TestReserveOpsSellTheStock(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	store := redisstore.NewStore(rdb, "eu")
	if _, err := store.ApplyGrant(ctx, "s", 0, 10); err != nil {
		t.Fatal(err)
	}
	b := redisstore.NewBatcher(store, 0, 0)
	defer b.Close()
	plan := loadgen.Plan{Workers: 4, Duration: time.Minute, MaxRequests: 12, Seed: 1}
	r1, err := loadgen.Run(ctx, plan, smallPop(t), reserveOp(store, "s"), nil)
	if err != nil {
		t.Fatal(err)
	}
	plan.Seed = 2 // other users
	r2, err := loadgen.Run(ctx, plan, smallPop(t), reserveOp(b, "s"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Reserved+r2.Reserved != 10 || r1.Reserved != 10 {
		t.Fatalf("reserved %d then %d: want 10 then 0", r1.Reserved, r2.Reserved)
	}
	if r2.ByOutcome["sold_out"].Count != 12 {
		t.Fatalf("batcher outcomes %+v", r2.ByOutcome)
	}
	v, err := loadgen.Verify(ctx, []loadgen.RegionRedis{{Region: "eu", Client: rdb}}, "s", 10, 1)
	if err != nil || !v.OK() {
		t.Fatalf("verify: %v %v", err, v.Violations)
	}
	if n, err := rdb.Incr(ctx, "k").Result(); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if res := incrOp(rdb, "k").Do(ctx, loadgen.Attempt{}); !res.Reserved {
		t.Fatalf("incr op: %+v", res)
	}
}
