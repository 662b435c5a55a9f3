// Package redistest starts real redis-server processes for tests: each on a
// free loopback port, in its own temp dir, with AOF and appendfsync always,
// stopped when the test ends. It never mocks Redis.
package redistest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redisproc"
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
