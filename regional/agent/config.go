package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"flashsale/quota/layout"
	"flashsale/regional/gossip"
)

// Config is the region agent's configuration. Start from DefaultConfig or
// DevConfig, set Region, and override what differs.
type Config struct {
	// Region is the region this agent serves; required. It names etcd keys,
	// so it is limited to [a-z0-9_-].
	Region string
	// Prefix is the etcd key prefix (quota/layout).
	Prefix string
	// ID is this process's election value, shown to operators as who leads
	// the region. Empty: host name and pid.
	ID string
	// Endpoint is the region's shopper base URL and RedisAddr its Redis,
	// both registered in the region's RegionInfo for the coordinator.
	Endpoint  string
	RedisAddr string

	// SessionTTL is the election lease TTL in seconds (etcd's unit). The
	// region's info and reports live on this lease, so a dead agent's
	// reports vanish this long after it stops.
	SessionTTL int
	// ReportInterval is how often Redis counters are read and checked for
	// lost writes, and so how soon a region turning low is reported.
	ReportInterval time.Duration
	// ReportRefresh is how often a sale's report is written when nothing
	// urgent happened (see term.reportDue): reports are coalesced to one
	// per ReportRefresh, which bounds how old the sale view sellers read
	// from the other regions' reports can be, and lets the coordinator
	// tell a quiet region from a stuck one by the report's At.
	ReportRefresh time.Duration
	// RetryInterval is the pause after a failed term (etcd or session
	// error) before campaigning again.
	RetryInterval time.Duration
	// OpTimeout bounds one etcd or Redis call.
	OpTimeout time.Duration

	// Witness is the order store, asked while the region is halted after
	// Redis lost writes (DESIGN §4.5). Nil: etcd's floors alone.
	Witness Witness

	// Membership is the region's gossip cluster as this process sees it
	// (a *gossip.Node: its seller's, or the agent's own); nil when the
	// region does not gossip. The region info then carries its address and the live
	// sellers, rewritten when they change (checked every ReportRefresh).
	Membership Membership

	// Demand returns the recent reserve attempts per second for a sale,
	// fed by the sellers. Nil: demand is reported as 0.
	Demand func(sale string) float64
	// Now is the clock for report times; tests may inject one. Nil: time.Now.
	Now func() time.Time
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Witness is the order store as a second witness of what the region sold
// (DESIGN §4.5). The agent asks it while the region is halted after its
// Redis lost writes, before selling again.
type Witness interface {
	// Restore brings the sale's reservations in the region's Redis up to
	// what the order store knows (confirmed, cancelled, expired) and
	// answers the units the region must count as sold: every unit the
	// order store shows held by a buyer that Redis does not hold as an
	// active reservation. The agent raises sold to at least that. Every
	// Redis write it makes carries fence, the agent's, and is refused
	// (quota.ErrStaleFence) once a successor's is there (DESIGN I5).
	Restore(ctx context.Context, sale string, fence int64) (soldFloor int64, err error)
}

// Membership is what the agent registers of the region's gossip cluster.
type Membership interface {
	// Addr is where this member gossips, a seed for new sellers.
	Addr() string
	// Members lists the live members.
	Members() []gossip.Member
}

// sellerNames are the live sellers' names, sorted (Members' order).
func sellerNames(ms []gossip.Member) []string {
	var out []string
	for _, m := range ms {
		if m.Role == gossip.RoleSeller {
			out = append(out, m.Name)
		}
	}
	return out
}

// DefaultConfig is a production starting point; Region must still be set.
func DefaultConfig() Config {
	return Config{
		Prefix:         layout.DefaultPrefix,
		SessionTTL:     5,
		ReportInterval: 100 * time.Millisecond,
		ReportRefresh:  time.Second,
		RetryInterval:  time.Second,
		OpTimeout:      3 * time.Second,
	}
}

// DevConfig suits one machine and tests: short lease, fast reports.
func DevConfig() Config {
	c := DefaultConfig()
	c.SessionTTL = 2
	c.ReportInterval = 100 * time.Millisecond
	c.ReportRefresh = time.Second
	c.RetryInterval = 200 * time.Millisecond
	return c
}

var regionRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case !regionRE.MatchString(c.Region):
		return fmt.Errorf("agent config: Region %q: want 1-64 characters of [a-z0-9_-]", c.Region)
	case c.Prefix == "" || c.Prefix[0] != '/' || strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("agent config: Prefix %q: want an absolute etcd path without a trailing slash", c.Prefix)
	case c.SessionTTL < 1:
		return fmt.Errorf("agent config: SessionTTL %d: want at least 1 second", c.SessionTTL)
	case c.ReportInterval <= 0:
		return fmt.Errorf("agent config: ReportInterval %v: want > 0", c.ReportInterval)
	case c.ReportRefresh < c.ReportInterval:
		return fmt.Errorf("agent config: ReportRefresh %v: want >= ReportInterval %v", c.ReportRefresh, c.ReportInterval)
	case time.Duration(c.SessionTTL)*time.Second <= c.ReportRefresh:
		return fmt.Errorf("agent config: ReportRefresh %v: want below the session TTL %ds", c.ReportRefresh, c.SessionTTL)
	case c.RetryInterval <= 0:
		return fmt.Errorf("agent config: RetryInterval %v: want > 0", c.RetryInterval)
	case c.OpTimeout <= 0:
		return fmt.Errorf("agent config: OpTimeout %v: want > 0", c.OpTimeout)
	}
	return nil
}

func (c *Config) fill() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("component", "region-agent", "region", c.Region)
}
