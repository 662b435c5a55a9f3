package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"flashsale/regional/gossip"
)

// gossipConfig builds a seller's gossip settings from its flags.
func gossipConfig(bind, seeds, keyFile, preset string, plaintext bool) (*gossip.Config, error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("-gossip %q: want host:port: %w", bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("-gossip %q: port %q is not a port number", bind, port)
	}
	cfg := &gossip.Config{BindAddr: host, BindPort: p, Preset: gossip.Preset(preset), Plaintext: plaintext}
	for _, s := range strings.Split(seeds, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Seeds = append(cfg.Seeds, s)
		}
	}
	if keyFile != "" {
		if cfg.Keys, err = readKeyring(keyFile); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// readKeyring reads base64 keys, one per line ('#' comments and blank
// lines ignored); the first is the primary.
func readKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-gossip-keys: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("-gossip-keys %s line %d: not base64: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("-gossip-keys %s: no key in the file (make one: head -c 32 /dev/urandom | base64)", path)
	}
	return keys, nil
}
