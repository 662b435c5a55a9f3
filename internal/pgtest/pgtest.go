// Package pgtest starts a real PostgreSQL server for tests (through
// internal/pgproc, with fsync off), stopped and removed when the test ends.
// It never mocks PostgreSQL.
package pgtest

import (
	"context"
	"testing"
	"time"

	"flashsale/internal/pgproc"
)

// InstallHint is the command that installs the PostgreSQL binaries.
const InstallHint = pgproc.InstallHint

// Database is the name of the database Start creates.
const Database = "flashsale_test"

// Server is one postgres child process owned by a test.
type Server struct {
	*pgproc.Proc
	t testing.TB
}

// Start runs initdb and postgres for t, creates the test database and
// registers the shutdown. It fails the test (with the install command) if
// the binaries are missing.
func Start(t testing.TB) *Server {
	t.Helper()
	p, err := launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &Server{Proc: p, t: t}
}

func launch() (*pgproc.Proc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return pgproc.Start(ctx, pgproc.Options{Database: Database, NoFsync: true})
}

// Restart starts the server again on the same port and data directory
// (after Kill, or kills it first); it fails the test if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Proc.Restart(context.Background()); err != nil {
		s.t.Fatal(err)
	}
}
