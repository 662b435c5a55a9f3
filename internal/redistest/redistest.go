// Package redistest starts real redis-server processes for tests: each on a
// free loopback port, in its own temp dir, with AOF and appendfsync always,
// stopped when the test ends. It never mocks Redis.
package redistest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redisproc"
	"flashsale/internal/testwait"
)

// Server is one redis-server child process owned by a test.
type Server struct {
	*redisproc.Proc
	t testing.TB
}

// Start launches a fresh redis-server for t and registers its shutdown.
// Extra redis-server arguments (e.g. "--appendfsync", "everysec") may follow.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	p, err := redisproc.Start(context.Background(), redisproc.Options{Dir: t.TempDir(), Args: args})
	if errors.Is(err, redisproc.ErrNotInstalled) {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &Server{Proc: p, t: t}
}

// Client returns a go-redis client for the server, closed with the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Restart kills the server (SIGKILL) and starts it again on the same port
// and data dir, so it reloads its AOF; it fails the test if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Proc.Restart(context.Background()); err != nil {
		s.t.Fatalf("restart redis-server: %v", err)
	}
}

// Pause stops the server (SIGSTOP) until Resume; the test's cleanup
// resumes it before stopping it.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.Proc.Pause(); err != nil {
		s.t.Fatalf("pause redis-server: %v", err)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.Proc.Resume(); err != nil {
		s.t.Fatalf("resume redis-server: %v", err)
	}
}

// Promote makes s a new primary, as a failover makes the replica it
// promotes: it keeps its data and gets a new replication id (INFO's
// master_replid, by which the seller epoch fence tells primaries apart).
// A replica stops following its primary, so writes made there from now on
// are missing here: a lagging replica's. It replicates from a port where
// nothing listens, then from no one, at once.
func (s *Server) Promote() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	if err := c.SlaveOf(ctx, "127.0.0.1", strconv.Itoa(FreePort(s.t))).Err(); err != nil {
		s.t.Fatalf("promote %s: %v", s.Addr, err)
	}
	if err := c.SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
		s.t.Fatalf("promote %s: %v", s.Addr, err)
	}
	s.settle(c)
}

// TakeOver replaces s's data with what from holds now and makes s a new
// primary (a new replication id): what a client of s's address sees
// after a failover to from, a replica that missed s's last writes. It
// replicates from from until in sync, then from no one.
func (s *Server) TakeOver(from *Server) {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	host, port, _ := strings.Cut(from.Addr, ":")
	if err := c.SlaveOf(ctx, host, port).Err(); err != nil {
		s.t.Fatalf("%s takes over %s: %v", s.Addr, from.Addr, err)
	}
	s.waitInfo(c, "replication", "master_link_status:up", "master_sync_in_progress:0")
	if err := c.SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
		s.t.Fatalf("%s takes over %s: %v", s.Addr, from.Addr, err)
	}
	s.settle(c)
}

// settle waits for the AOF rewrite a replica's sync starts: a server told
// to stop during it refuses to exit ("Writing initial AOF, can't exit"),
// and the test's cleanup waits 5 s before it kills it.
func (s *Server) settle(c *redis.Client) {
	s.t.Helper()
	s.waitInfo(c, "persistence", "aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0")
}

// waitInfo waits until INFO section says every one of want.
func (s *Server) waitInfo(c *redis.Client, section string, want ...string) {
	s.t.Helper()
	testwait.For(s.t, s.Addr+" INFO "+section+" "+strings.Join(want, " "), 20*time.Second, func() bool {
		info, err := c.Info(context.Background(), section).Result()
		if err != nil {
			return false
		}
		for _, w := range want {
			if !strings.Contains(info, w) {
				return false
			}
		}
		return true
	})
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartHA launches a primary with replicas and three sentinels for t
// (redisproc.StartHA in a temp dir) and registers their shutdown.
func StartHA(t testing.TB, o redisproc.HAOptions) *redisproc.HA {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	h, err := redisproc.StartHA(context.Background(), o)
	if err != nil {
		t.Fatalf("start redis with sentinels: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// StartReplica launches a redis-server replicating primary (an address)
// for t, with extra arguments, and waits until the primary lists it
// online.
func StartReplica(t testing.TB, primary string, args ...string) *Server {
	t.Helper()
	host, port, _ := strings.Cut(primary, ":")
	s := Start(t, append([]string{"--replicaof", host, port}, args...)...)
	if err := redisproc.WaitOnlineReplicas(context.Background(), primary, 1); err != nil {
		t.Fatalf("replica %s of %s: %v", s.Addr, primary, err)
	}
	return s
}
