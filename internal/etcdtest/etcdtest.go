// Package etcdtest starts a real embedded etcd member for a test and returns
// clients to it. It never mocks etcd.
package etcdtest

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/internal/etcdembed"
)

// Start runs an embedded etcd for t, stopped when the test ends.
func Start(t testing.TB) *etcdembed.Etcd {
	t.Helper()
	e, err := etcdembed.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// Client returns a new client of e, closed when the test ends.
func Client(t testing.TB, e *etcdembed.Etcd) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
