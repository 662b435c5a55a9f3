package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// Config is the coordinator's configuration. Start from DefaultConfig or
// DevConfig and override what differs.
type Config struct {
	// Prefix is the etcd key prefix (quota/layout).
	Prefix string
	// ListenAddr is where the gRPC API listens (host:port; port 0 picks one).
	ListenAddr string
	// AdvertiseAddr is the gRPC address stored as the election value, so
	// followers can say where the leader is. Empty: the listener's address.
	AdvertiseAddr string
	// Token is the bearer token admin calls must carry. Empty is refused
	// unless InsecureNoAuth is set.
	Token          string
	InsecureNoAuth bool

	// Interval is the rebalance loop's period.
	Interval time.Duration
	// SessionTTL is the election lease TTL in seconds (etcd's unit).
	SessionTTL int
	// ReportStale is the age above which a region's report no longer
	// counts as fresh (for learning mode and readiness).
	ReportStale time.Duration
	// LearningGrace bounds learning mode: a new leader grants nothing until
	// every live region has reported since it took over, or this long.
	LearningGrace time.Duration
	// SplitLead is how long before a sale opens the initial split is made,
	// so regions hold quota at the opening second.
	SplitLead time.Duration
	// DemandLag is how long after a sale opens a region reporting no
	// demand is not yet taken for idle (its buyers may not show in the
	// rates yet): a few of the sellers' attempt flushes and the agent's
	// rate readings (200 and 100 ms).
	DemandLag time.Duration
	// SweepBefore is how long before a sale ends the loop switches from
	// Rebalance to EndSweep (leftovers go where buyers still are).
	SweepBefore time.Duration
	// Policy tunes the planners; it is stored in each new sale's allocation,
	// so every leader plans that sale alike.
	Policy quota.Policy
	// WriteTimeout bounds one etcd write.
	WriteTimeout time.Duration

	// Now is the clock; tests inject one. Nil: time.Now.
	Now func() time.Time
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is a production starting point.
func DefaultConfig() Config {
	return Config{
		Prefix:        layout.DefaultPrefix,
		ListenAddr:    "127.0.0.1:7400",
		Interval:      250 * time.Millisecond,
		SessionTTL:    5,
		ReportStale:   3 * time.Second,
		LearningGrace: 5 * time.Second,
		SplitLead:     5 * time.Second,
		SweepBefore:   30 * time.Second,
		DemandLag:     500 * time.Millisecond,
		Policy:        quota.DefaultPolicy(),
		WriteTimeout:  5 * time.Second,
	}
}

// DevConfig suits one machine and tests: fast loop, short timeouts, any free
// port.
func DevConfig() Config {
	c := DefaultConfig()
	c.ListenAddr = "127.0.0.1:0"
	c.Interval = 50 * time.Millisecond
	c.SessionTTL = 2
	c.ReportStale = 2 * time.Second
	c.LearningGrace = time.Second
	c.SplitLead = time.Second
	c.SweepBefore = 5 * time.Second
	return c
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Prefix == "" || c.Prefix[0] != '/':
		return fmt.Errorf("coordinator config: Prefix %q must start with /", c.Prefix)
	case c.Interval <= 0:
		return fmt.Errorf("coordinator config: Interval %v must be positive", c.Interval)
	case c.SessionTTL < 1:
		return fmt.Errorf("coordinator config: SessionTTL %d must be at least 1 (seconds)", c.SessionTTL)
	case c.ReportStale <= 0:
		return fmt.Errorf("coordinator config: ReportStale %v must be positive", c.ReportStale)
	case c.LearningGrace < 0:
		return fmt.Errorf("coordinator config: LearningGrace %v must not be negative", c.LearningGrace)
	case c.SplitLead < 0:
		return fmt.Errorf("coordinator config: SplitLead %v must not be negative", c.SplitLead)
	case c.DemandLag < 0:
		return fmt.Errorf("coordinator config: DemandLag %v must not be negative", c.DemandLag)
	case c.SweepBefore < 0:
		return fmt.Errorf("coordinator config: SweepBefore %v must not be negative", c.SweepBefore)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("coordinator config: WriteTimeout %v must be positive", c.WriteTimeout)
	case c.Token == "" && !c.InsecureNoAuth:
		return errors.New("coordinator config: Token is empty (set a token, or InsecureNoAuth for dev)")
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("coordinator config: Policy: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return fmt.Errorf("coordinator config: ListenAddr %q: %w", c.ListenAddr, err)
	}
	return nil
}
