package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// TestGossipFlags: the keyring file and the bind address are checked with
// messages that say what to fix.
func TestGossipFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys")
	k1, k2 := strings.Repeat("a", 32), strings.Repeat("b", 16)
	_ = os.WriteFile(good, []byte("# rotated 2026-12\n"+base64.StdEncoding.EncodeToString([]byte(k1))+"\n\n"+base64.StdEncoding.EncodeToString([]byte(k2))+"\n"), 0o600)
	cfg, err := gossipConfig("127.0.0.1:7946", "a:1, b:2", good, "lan", false)
	if err != nil || len(cfg.Keys) != 2 || string(cfg.Keys[0]) != k1 || cfg.BindPort != 7946 || len(cfg.Seeds) != 2 || cfg.Seeds[1] != "b:2" {
		t.Fatalf("%+v %v", cfg, err)
	}
	empty, bad := filepath.Join(dir, "empty"), filepath.Join(dir, "bad")
	_ = os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	_ = os.WriteFile(bad, []byte("not base64!\n"), 0o600)
	for _, tc := range []struct{ bind, keys, want string }{
		{"7946", "", "want host:port"},
		{"127.0.0.1:x", "", "not a port number"},
		{"127.0.0.1:7946", empty, "no key in the file"},
		{"127.0.0.1:7946", bad, "line 1: not base64"},
		{"127.0.0.1:7946", filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := gossipConfig(tc.bind, "", tc.keys, "lan", false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gossipConfig(%q, keys %q): %v, want %q", tc.bind, tc.keys, err, tc.want)
		}
	}
}
