package etcdtest

import (
	"context"
	"testing"
)

func TestPutGet(t *testing.T) {
	e := Start(t)
	c := Client(t, e)
	ctx := context.Background()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(ctx, "/k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get /k = %v, %v", r, err)
	}
}
