package redisstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/quota"
)

// TestWaitDurability: in wait mode a reservation is answered only once a
// replica has it; with the replica stalled (SIGSTOP) the answer is
// ErrNotReplicated, an outcome_unknown, through Reserve and through the
// Batcher alike, and never "reserved". A retry once the replica is back
// answers the same reservation (the script ran on the primary). The
// readiness check names what wait mode needs.
func TestWaitDurability(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t, "--appendfsync", "everysec", "--min-replicas-to-write", "1", "--min-replicas-max-lag", "60")
	replica := redistest.StartReplica(t, primary.Addr, "--appendfsync", "everysec")
	rdb := primary.Client()
	// WAIT gets a second: enough for a replica on a loaded machine; the
	// stalled case below waits it out.
	s := NewStore(rdb, "eu").WithDurability(Durability{Mode: DurableWait, WaitTimeout: time.Second})
	if err := s.Durability(ctx); err != nil {
		t.Fatalf("wait mode with one online replica and min-replicas-to-write 1: %v", err)
	}
	if err := NewStore(rdb, "eu").Durability(ctx); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "appendfsync") {
		t.Fatalf("fsync mode on an everysec server: %v, want ErrNotDurable naming appendfsync", err)
	}
	mustGrant(t, s, "s1", 1, 10)
	first := mustReserve(t, s, "s1", buy("u1", "r1", t0), quota.Reserved)
	// Read the replica: WAIT said it had the reservation.
	if got, err := replica.Client().HGet(ctx, "{sale:s1}:resv:"+first.ID, "state").Result(); err != nil || got != "active" {
		t.Fatalf("replica after an acknowledged reserve: %q %v", got, err)
	}

	replica.Pause()
	_, err := s.Reserve(ctx, "s1", buy("u2", "r2", t0))
	if !errors.Is(err, ErrNotReplicated) || !errors.Is(err, ErrOutcomeUnknown) || NotSent(err) {
		t.Fatalf("reserve with the replica stalled: %v, want ErrNotReplicated (an outcome unknown, sent)", err)
	}
	b := NewBatcher(s, 4, 1)
	defer b.Close()
	_, err = b.Reserve(ctx, "s1", buy("u3", "r3", t0))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("batched reserve with the replica stalled: %v, want ErrOutcomeUnknown", err)
	}
	replica.Resume()
	for _, u := range []string{"u2", "u3"} {
		res, err := b.Reserve(ctx, "s1", buy(u, "r"+u[1:], t0))
		if err != nil || res.Outcome != quota.Duplicate || res.Reservation.User != u {
			t.Fatalf("retry of %s once the replica is back: %+v %v, want the reservation the first try made", u, res, err)
		}
	}
	if c := mustCounters(t, s, "s1"); c.Reserved != 3 {
		t.Fatalf("reserved %d, want 3", c.Reserved)
	}

	// A primary that accepts writes with no replica is not durable in wait mode.
	if err := rdb.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Durability(ctx); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "min-replicas-to-write") {
		t.Fatalf("min-replicas-to-write 0: %v, want ErrNotDurable naming it", err)
	}
	two := s.WithDurability(Durability{Mode: DurableWaitFsync, Replicas: 2})
	_ = rdb.ConfigSet(ctx, "min-replicas-to-write", "2").Err()
	if err := two.Durability(ctx); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "appendfsync") {
		t.Fatalf("wait+fsync on an everysec server: %v", err)
	}
	_ = rdb.ConfigSet(ctx, "appendfsync", "always").Err()
	if err := two.Durability(ctx); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "2 online replicas") {
		t.Fatalf("two replicas wanted, one online: %v", err)
	}
}

func TestParseReplication(t *testing.T) {
	info := "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
		"slave0:ip=127.0.0.1,port=7001,state=online,offset=120,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=3\r\nmaster_repl_offset:130\r\n"
	r := ParseReplication(info)
	if r.Role != "master" || r.Offset != 130 || len(r.Replicas) != 2 || r.Online() != 1 ||
		r.Replicas[1].Addr != "127.0.0.1:7002" || r.Replicas[1].Lag != 3 || r.Replicas[0].Offset != 120 {
		t.Fatalf("parsed %+v", r)
	}
	for _, m := range []string{"", "fsync", "wait", "wait+fsync"} {
		if _, err := ParseDurabilityMode(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseDurabilityMode("always"); err == nil || !strings.Contains(err.Error(), strconv.Quote("always")) {
		t.Fatalf("bad mode: %v", err)
	}
}
