package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartKillRestartKeepsCommittedData(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	_ = conn.Close(ctx)
	s.Restart()
	conn, err = pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 42 {
		t.Fatalf("v = %d after restart, want 42", v)
	}
}

func TestMain(m *testing.M) { os.Exit(RunShared(m)) }

func TestFreshDatabasesAreSeparate(t *testing.T) {
	ctx := context.Background()
	a, b := Fresh(t), Fresh(t)
	if a == b {
		t.Fatalf("Fresh returned %s twice", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE only_in_a (v int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	if _, err := cb.Exec(ctx, "CREATE TABLE only_in_a (v int)"); err != nil {
		t.Fatalf("database b sees a's table: %v", err)
	}
}
