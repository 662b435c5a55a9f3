package pgtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"flashsale/internal/pgproc"
)

// One server per test binary for Fresh: starting PostgreSQL costs seconds,
// a database costs milliseconds.
var shared struct {
	mu      sync.Mutex
	enabled bool
	srv     *pgproc.Proc
	err     error
	n       int
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
	_ = shared.srv.Close()
	shared.srv = nil
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
		shared.srv, shared.err = launch()
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	shared.n++
	name := fmt.Sprintf("fresh_%d", shared.n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := shared.srv.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	return shared.srv.DatabaseDSN(name)
}
