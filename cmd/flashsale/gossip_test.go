package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"flashsale/internal/redistest"
)

// TestMultiProcessSellersGossip: two seller processes of one region form
// a gossip cluster; one is killed with SIGKILL and the other sees the
// region down to one seller (its share of the rate limits back to whole).
func TestMultiProcessSellersGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin, dir := binary(t), t.TempDir()
	rs := redistest.Start(t)
	start := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	end := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	conf := filepath.Join(dir, "eu.yaml")
	yaml := fmt.Sprintf("preset: dev\nregion: eu\nredis: %s\nidentity:\n  insecureDev: true\nsales:\n  - id: g1\n    total: 20\n    startsAt: %q\n    endsAt: %q\n    ceiling: 20\n", rs.Addr, start, end)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	type seller struct {
		url, gossip string
		proc        *proc
	}
	sellers := make([]seller, 2)
	for i := range sellers {
		port := freePort(t)
		sellers[i] = seller{url: "http://127.0.0.1:" + port, gossip: "127.0.0.1:" + freePort(t)}
		args := []string{"regional", "-config", conf, "-listen", "127.0.0.1:" + port,
			"-gossip", sellers[i].gossip, "-gossip-preset", "local", "-gossip-plaintext"}
		if i > 0 {
			args = append(args, "-gossip-seeds", sellers[0].gossip)
		}
		sellers[i].proc = startProc(t, bin, filepath.Join(dir, fmt.Sprint("seller", i, ".log")), nil, args...)
	}
	count := func(s seller) int {
		resp, err := http.Get(s.url + "/v1/flash-sale/status?itemId=g1")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var st struct {
			Sellers int `json:"sellers"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return -1
		}
		return st.Sellers
	}
	for _, s := range sellers {
		waitUntil(t, s.url+" sees two sellers", 60*time.Second, func() bool { return count(s) == 2 })
	}
	sellers[0].proc.kill()
	waitUntil(t, "the survivor sees the killed seller gone", 60*time.Second, func() bool { return count(sellers[1]) == 1 })
}
