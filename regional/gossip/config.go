package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role is what a member does in its region.
type Role string

const (
	RoleSeller Role = "seller"
	RoleAgent  Role = "agent"
)

// Preset names one of memberlist's own timing profiles.
type Preset string

const (
	// PresetLAN is memberlist.DefaultLANConfig: production, one data
	// centre (probe every 1 s, failure detected in about 5 s at 10 nodes).
	PresetLAN Preset = "lan"
	// PresetLocal is memberlist.DefaultLocalConfig: loopback, for tests
	// and the dev stack (gossip every 100 ms, probes with a 200 ms timeout).
	PresetLocal Preset = "local"
)

// Config is one member's place in its region's cluster.
type Config struct {
	// Name is unique within the region (default: "<role>-<bind port>").
	Name   string
	Region string // the cluster: members of other regions are refused (memberlist's Label)
	Role   Role
	// Version is the build, carried in the node metadata.
	Version string
	Preset  Preset

	// BindAddr and BindPort are where memberlist listens (TCP and UDP);
	// port 0 picks a free one. AdvertiseAddr/Port default to them.
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	AdvertisePort int

	// Seeds are "host:port" of members to join; empty starts a new cluster.
	// A region's agent registers its gossip address in etcd, so a seller
	// can join through it (Seeds from layout.RegionInfo.Gossip).
	Seeds []string

	// Keys is the keyring, each 16, 24 or 32 bytes (AES-128/192/256); the
	// first is the primary, used to encrypt; all are tried to decrypt, so
	// a key is rotated by adding the new one second everywhere, then making
	// it first everywhere, then removing the old one. A member without the
	// key cannot join. Empty only with Plaintext (dev mode).
	Keys      [][]byte
	Plaintext bool

	// OnState is called for every state that wins (see Node.Publish), from
	// memberlist's goroutines: it must not block. OnMembers is called when
	// the live membership changes.
	OnState   func(State)
	OnMembers func()

	Logger *slog.Logger
}

func (c *Config) check() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("gossip: Region is required"))
	}
	if c.Role != RoleSeller && c.Role != RoleAgent {
		errs = append(errs, fmt.Errorf("gossip: Role %q: want %q or %q", c.Role, RoleSeller, RoleAgent))
	}
	switch c.Preset {
	case "":
		c.Preset = PresetLAN
	case PresetLAN, PresetLocal:
	default:
		errs = append(errs, fmt.Errorf("gossip: Preset %q: want %q or %q", c.Preset, PresetLAN, PresetLocal))
	}
	if len(c.Keys) == 0 && !c.Plaintext {
		errs = append(errs, errors.New("gossip: a keyring is required outside dev mode (Keys), or set Plaintext"))
	}
	for i, k := range c.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip: key %d is %d bytes: want 16, 24 or 32", i, n))
		}
	}
	if c.BindAddr == "" {
		c.BindAddr = "127.0.0.1"
	}
	if c.Version == "" {
		c.Version = buildVersion()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// memberlistConfig builds memberlist's config from the preset.
func (c *Config) memberlistConfig(d *delegate) (*memberlist.Config, error) {
	var mc *memberlist.Config
	if c.Preset == PresetLocal {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.Name
	mc.BindAddr, mc.BindPort = c.BindAddr, c.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = c.AdvertiseAddr, c.AdvertisePort
	mc.Label = "flashsale/" + c.Region
	mc.Delegate, mc.Events = d, d
	mc.LogOutput = slogWriter{c.Logger}
	if len(c.Keys) > 0 {
		kr, err := memberlist.NewKeyring(c.Keys, c.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	// Leaving is announced; a node that died is declared dead after the
	// suspicion timeout. Names are reused across restarts (a seller that
	// comes back under its name is the same seller), so a dead name may be
	// reclaimed at once.
	mc.DeadNodeReclaimTime = time.Nanosecond
	return mc, nil
}

// slogWriter turns memberlist's log lines ("[DEBUG] memberlist: ...") into
// slog records; log.Logger writes each line in one Write call.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(line, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(line, "[INFO]"):
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, "memberlist", "line", line)
	return len(p), nil
}

// buildVersion names this binary's build: its module version, or the VCS
// revision it was built from ("dev" when neither is known, as in tests).
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	for _, st := range bi.Settings {
		if st.Key == "vcs.revision" && len(st.Value) >= 12 {
			return st.Value[:12]
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	return "dev"
}
