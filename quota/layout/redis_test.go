package layout

import "testing"

func TestRedisKeys(t *testing.T) {
	for got, want := range map[string]string{
		SaleKey("s1", "ledger"): "{sale:s1}:ledger",
		StreamKey("s1"):         "{sale:s1}:orders",
		ResvKey("s1", "01J"):    "{sale:s1}:resv:01J",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
