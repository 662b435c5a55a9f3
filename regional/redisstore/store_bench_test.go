package redisstore

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
)

// The benchmarks run side by side on one redis-server (AOF, appendfsync
// always) with the same client concurrency, so their ratios mean something
// even where absolute speeds do not (DESIGN §7):
//
//	go test ./regional -run '^$' -bench 'Incr|Reserve' -benchtime 20000x
//
// Each runs twice: fsync=always is production (writes wait for the disk,
// which Redis group-commits across clients); fsync=no shows the CPU cost of
// the script itself next to a bare INCR.

const benchParallelism = 8 // goroutines per GOMAXPROCS

var benchUser atomic.Int64

// benchRedis runs f as sub-benchmarks against a Redis with appendfsync
// always and one with appendfsync no.
func benchRedis(b *testing.B, f func(b *testing.B, s *Store, rdb *redis.Client)) {
	for _, fsync := range []string{"always", "no"} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			rdb := redistest.Start(b, "--appendfsync", fsync).Client()
			s := NewStore(rdb, "eu")
			if err := s.Load(context.Background()); err != nil {
				b.Fatal(err)
			}
			f(b, s, rdb)
		})
	}
}

// benchReserve runs b.N reserves, each a new user, through reserve.
func benchReserve(b *testing.B, s *Store, sale string, reserve reserveFunc, want quota.Outcome) {
	ctx := context.Background()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u := "b" + strconv.FormatInt(benchUser.Add(1), 10)
			res, err := reserve(ctx, sale, buy(u, u, t0))
			if err != nil {
				b.Error(err)
				return
			}
			if res.Outcome != want {
				b.Errorf("outcome %v, want %v", res.Outcome, want)
				return
			}
		}
	})
}

// BenchmarkIncr is the floor: a bare INCR, what one global counter costs.
func BenchmarkIncr(b *testing.B) {
	benchRedis(b, func(b *testing.B, _ *Store, rdb *redis.Client) {
		ctx := context.Background()
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := rdb.Incr(ctx, "counter").Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkReserve is one reserve script call per attempt, every attempt
// a success (the expensive path: seven writes and a stream entry).
func BenchmarkReserve(b *testing.B) {
	benchRedis(b, func(b *testing.B, s *Store, _ *redis.Client) {
		mustGrant(b, s, "bench", 1, 1<<40)
		benchReserve(b, s, "bench", s.Reserve, quota.Reserved)
	})
}

// BenchmarkReserveBatched is BenchmarkReserve through the Batcher.
func BenchmarkReserveBatched(b *testing.B) {
	benchRedis(b, func(b *testing.B, s *Store, _ *redis.Client) {
		mustGrant(b, s, "bench", 1, 1<<40)
		bt := NewBatcher(s, DefaultMaxBatch, 0)
		defer bt.Close()
		countBatches(b, bt)
		benchReserve(b, s, "bench", bt.Reserve, quota.Reserved)
	})
}

// BenchmarkReserveSoldOut is the common case in a flash sale: the attempt
// is refused (no writes).
func BenchmarkReserveSoldOut(b *testing.B) {
	benchRedis(b, func(b *testing.B, s *Store, _ *redis.Client) {
		benchReserve(b, s, "bench", s.Reserve, quota.SoldOut)
	})
}

// BenchmarkReserveSoldOutBatched is the refusal through the Batcher.
func BenchmarkReserveSoldOutBatched(b *testing.B) {
	benchRedis(b, func(b *testing.B, s *Store, _ *redis.Client) {
		bt := NewBatcher(s, DefaultMaxBatch, 0)
		defer bt.Close()
		countBatches(b, bt)
		benchReserve(b, s, "bench", bt.Reserve, quota.SoldOut)
	})
}

// countBatches reports the mean batch size as reserves/call.
func countBatches(b *testing.B, bt *Batcher) {
	var calls, reqs atomic.Int64
	bt.onBatch = func(_ string, n int) {
		calls.Add(1)
		reqs.Add(int64(n))
	}
	b.Cleanup(func() {
		if c := calls.Load(); c > 0 {
			b.ReportMetric(float64(reqs.Load())/float64(c), "reserves/call")
		}
	})
}

// BenchmarkReserveRedisCPU is what a reservation costs Redis itself: full
// batches of DefaultMaxBatch new buyers, one call at a time, with Redis's
// own CPU time (INFO cpu, main thread) reported per reservation. Client
// and machine noise stay out of the figure:
//
//	go test ./regional -run '^$' -bench ReserveRedisCPU -benchtime 2000x
func BenchmarkReserveRedisCPU(b *testing.B) {
	rdb := redistest.Start(b, "--appendfsync", "no").Client()
	s := NewStore(rdb, "eu")
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		b.Fatal(err)
	}
	mustGrant(b, s, "bench", 1, 1<<40)
	batch := make([]ReserveRequest, DefaultMaxBatch)
	before := redisCPU(b, rdb)
	b.ResetTimer()
	for range b.N {
		now := time.Now()
		for i := range batch {
			u := "c" + strconv.FormatInt(benchUser.Add(1), 10)
			batch[i] = buy(u, u, now)
		}
		res, _, err := s.reserveBatch(ctx, "bench", batch)
		if err != nil {
			b.Fatal(err)
		}
		if res[len(res)-1].Outcome != quota.Reserved {
			b.Fatalf("outcome %v, want reserved", res[len(res)-1].Outcome)
		}
	}
	b.StopTimer()
	spent := redisCPU(b, rdb) - before
	b.ReportMetric(spent.Seconds()*1e6/float64(b.N*len(batch)), "redis-µs/reservation")
}

// redisCPU is the CPU time Redis's main thread has used.
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %q: %v", line, err)
			}
			total += f
		}
	}
	if total == 0 {
		b.Fatalf("INFO cpu has no main-thread times: %q", info)
	}
	return time.Duration(total * float64(time.Second))
}
