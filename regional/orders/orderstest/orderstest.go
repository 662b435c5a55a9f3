// Package orderstest gives tests outside regional/orders a real order
// store: an SQLite file in the test's temp dir, closed at cleanup.
package orderstest

import (
	"context"
	"path/filepath"
	"testing"

	"flashsale/regional/orders"
)

// SQLite opens a fresh SQLite order store (migrations applied).
func SQLite(tb testing.TB) orders.Store {
	tb.Helper()
	s, err := orders.Open(context.Background(), "sqlite://"+filepath.Join(tb.TempDir(), "orders.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}
