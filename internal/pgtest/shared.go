package pgtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// One server per test binary for Fresh: starting PostgreSQL costs seconds,
// a database costs milliseconds.
var shared struct {
	mu       sync.Mutex
	enabled  bool
	srv      *Server
	err      error
	cleanups []func()
	n        int
}

// RunShared runs a package's tests with one PostgreSQL server shared by
// every Fresh call, started on first use and stopped when the tests end.
// Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.RunShared(m)) }
func RunShared(m *testing.M) int {
	shared.mu.Lock()
	shared.enabled = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for i := len(shared.cleanups) - 1; i >= 0; i-- {
		shared.cleanups[i]()
	}
	shared.cleanups, shared.srv = nil, nil
	return code
}

// Fresh returns the DSN of a new, empty database on the shared server.
// Tests that kill or restart PostgreSQL must use Start instead: the server
// is shared with the other tests of the package.
func Fresh(t testing.TB) string {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.enabled {
		t.Fatal(errors.New("pgtest.Fresh needs the package's TestMain to call pgtest.RunShared(m)"))
	}
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = launch(func(f func()) { shared.cleanups = append(shared.cleanups, f) }, nil)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	shared.n++
	name := fmt.Sprintf("fresh_%d", shared.n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := shared.srv.createDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", shared.srv.Port, name)
}
