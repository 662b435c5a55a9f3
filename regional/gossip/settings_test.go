package gossip

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSettings: the keyring file and the bind address are checked with
// messages that say what to fix.
func TestSettings(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys")
	k1, k2 := strings.Repeat("a", 32), strings.Repeat("b", 16)
	_ = os.WriteFile(good, []byte("# rotated 2026-12\n"+base64.StdEncoding.EncodeToString([]byte(k1))+"\n\n"+base64.StdEncoding.EncodeToString([]byte(k2))+"\n"), 0o600)
	cfg, err := Settings{Bind: "127.0.0.1:7946", Seeds: strings.Split("a:1, b:2", ","), KeysFile: good, Preset: "lan"}.Config()
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
		if _, err := (Settings{Bind: tc.bind, KeysFile: tc.keys, Preset: "lan"}).Config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gossip settings (bind %q, keys %q): %v, want %q", tc.bind, tc.keys, err, tc.want)
		}
	}
}
