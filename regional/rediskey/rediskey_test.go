package rediskey

import "testing"

func TestKeys(t *testing.T) {
	if got := Sale("s1", "ledger"); got != "{sale:s1}:ledger" {
		t.Fatalf("Sale: %q", got)
	}
	if got := Stream("s1"); got != "{sale:s1}:orders" {
		t.Fatalf("Stream: %q", got)
	}
}
