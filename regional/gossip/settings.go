package gossip

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Settings are a member's settings as an operator writes them: flags
// (flashsale regional -gossip ...) or the config file's gossip block.
type Settings struct {
	Bind      string   `yaml:"bind"`     // host:port for TCP and UDP
	Seeds     []string `yaml:"seeds"`    // host:port of members to join
	KeysFile  string   `yaml:"keysFile"` // keyring file, see ReadKeyring
	Preset    string   `yaml:"preset"`   // lan (default) or local
	Plaintext bool     `yaml:"plaintext"`
}

// Config turns the settings into a Config (Region, Role and the callbacks
// are the caller's); the keyring file is read now.
func (s Settings) Config() (*Config, error) {
	host, port, err := net.SplitHostPort(s.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind %q: want host:port: %w", s.Bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("gossip bind %q: port %q is not a port number", s.Bind, port)
	}
	cfg := &Config{BindAddr: host, BindPort: p, Preset: Preset(s.Preset), Plaintext: s.Plaintext}
	for _, seed := range s.Seeds {
		if seed = strings.TrimSpace(seed); seed != "" {
			cfg.Seeds = append(cfg.Seeds, seed)
		}
	}
	if s.KeysFile != "" {
		if cfg.Keys, err = ReadKeyring(s.KeysFile); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// ReadKeyring reads a keyring file: base64 keys of 16, 24 or 32 bytes, one
// per line ('#' comments and blank lines ignored); the first is the
// primary (see Config.Keys for rotation).
func ReadKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring %s line %d: not base64: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip keyring %s: no key in the file (make one: head -c 32 /dev/urandom | base64)", path)
	}
	return keys, nil
}
