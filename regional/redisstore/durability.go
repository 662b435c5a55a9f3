package redisstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DurabilityMode says what must hold of a write before the Store answers
// it (DESIGN I4: "reserved" means durable as configured).
type DurabilityMode string

const (
	// DurableFsync: the primary runs appendonly yes, appendfsync always, so
	// a write is on its disk before Redis answers. Survives kill -9 and a
	// restart of that node; not the loss of its disk, nor a failover to a
	// replica that lagged.
	DurableFsync DurabilityMode = "fsync"
	// DurableWait: every script call is followed, on the same connection,
	// by WAIT Replicas WaitTimeout; the answer stands only if that many
	// replicas acknowledged it, otherwise it is ErrNotReplicated (an
	// outcome_unknown). The primary must run min-replicas-to-write >=
	// Replicas, so it refuses writes when the replicas are gone. Survives
	// kill -9 of the primary and a Sentinel failover; not a power loss of
	// every node at once (the replicas' AOF is fsynced every second).
	DurableWait DurabilityMode = "wait"
	// DurableWaitFsync is both: on the primary's disk and on Replicas
	// replicas before the answer.
	DurableWaitFsync DurabilityMode = "wait+fsync"
)

// ParseDurabilityMode reads a mode name; "" is DurableFsync.
func ParseDurabilityMode(s string) (DurabilityMode, error) {
	switch m := DurabilityMode(s); m {
	case "":
		return DurableFsync, nil
	case DurableFsync, DurableWait, DurableWaitFsync:
		return m, nil
	}
	return "", fmt.Errorf("durability mode %q: want fsync, wait or wait+fsync", s)
}

func (m DurabilityMode) fsyncs() bool { return m == "" || m == DurableFsync || m == DurableWaitFsync }
func (m DurabilityMode) waits() bool  { return m == DurableWait || m == DurableWaitFsync }

// Durability is a region's durability setting. The zero value is
// DurableFsync.
type Durability struct {
	Mode DurabilityMode
	// Replicas is WAIT's numreplicas and the least min-replicas-to-write
	// the primary must run with (wait modes); 0 means 1.
	Replicas int
	// WaitTimeout bounds WAIT (wait modes); 0 means DefaultWaitTimeout.
	// It is spent inside the buyer's Redis budget (RedisTimeout).
	WaitTimeout time.Duration
}

// DefaultWaitTimeout is WAIT's default timeout: a replica on the same
// network acknowledges in well under a millisecond, so 50 ms is a stalled
// replica, and the buyer still gets an answer (outcome_unknown) within
// the 150 ms Redis budget.
const DefaultWaitTimeout = 50 * time.Millisecond

func (d Durability) withDefaults() Durability {
	if d.Mode == "" {
		d.Mode = DurableFsync
	}
	if d.Replicas <= 0 {
		d.Replicas = 1
	}
	if d.WaitTimeout <= 0 {
		d.WaitTimeout = DefaultWaitTimeout
	}
	return d
}

// Validate names a bad setting.
func (d Durability) Validate() error {
	if _, err := ParseDurabilityMode(string(d.Mode)); err != nil {
		return err
	}
	if d.Replicas < 0 {
		return fmt.Errorf("durability replicas %d: want >= 0 (0 means 1)", d.Replicas)
	}
	if d.WaitTimeout < 0 {
		return fmt.Errorf("durability wait timeout %v: want >= 0", d.WaitTimeout)
	}
	return nil
}

func (d Durability) String() string {
	d = d.withDefaults()
	if !d.Mode.waits() {
		return string(d.Mode)
	}
	return fmt.Sprintf("%s (WAIT %d %v)", d.Mode, d.Replicas, d.WaitTimeout)
}

// ErrNotReplicated means a script ran on the primary but WAIT did not see
// it on enough replicas in time (or WAIT failed): its answer is not
// durable as configured, so the caller must not acknowledge it. It is an
// ErrOutcomeUnknown: a retry with the same request id answers what was
// done, once Redis has settled.
var ErrNotReplicated = fmt.Errorf("%w: not acknowledged by enough replicas", ErrOutcomeUnknown)

// WithDurability returns a copy of s that acknowledges writes as d says.
// NewStore's is DurableFsync, which the Store only checks (Durability):
// fsync always is Redis' own setting.
func (s *Store) WithDurability(d Durability) *Store {
	c := *s
	c.dur = d.withDefaults()
	return &c
}

// DurabilitySetting is the setting s acknowledges writes under.
func (s *Store) DurabilitySetting() Durability { return s.dur.withDefaults() }

// runScript runs one script call, followed in wait modes by WAIT on the
// same connection: WAIT covers only the writes made by the connection it
// is sent on, so the two go in one pipeline (go-redis sends a pipeline on
// one connection). EVALSHA's automatic EVAL fallback does not work inside
// a pipeline: on NOSCRIPT (the script did not run) the pair is sent again
// with the script's body.
func (s *Store) runScript(ctx context.Context, sc *redis.Script, keys []string, args []any) (any, error) {
	if !s.dur.Mode.waits() {
		return sc.Run(ctx, s.rdb, keys, args...).Result()
	}
	v, err := s.thenWait(ctx, func(p redis.Pipeliner) *redis.Cmd { return sc.EvalSha(ctx, p, keys, args...) })
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		v, err = s.thenWait(ctx, func(p redis.Pipeliner) *redis.Cmd { return sc.Eval(ctx, p, keys, args...) })
	}
	return v, err
}

func (s *Store) thenWait(ctx context.Context, script func(redis.Pipeliner) *redis.Cmd) (any, error) {
	pipe := s.rdb.Pipeline()
	c := script(pipe)
	// Pipeliner has no Wait method. The connection's read timeout (3 s by
	// default) must exceed WaitTimeout.
	w := redis.NewIntCmd(ctx, "wait", s.dur.Replicas, s.dur.WaitTimeout.Milliseconds())
	_ = pipe.Process(ctx, w)
	_, _ = pipe.Exec(ctx) // each command keeps its own error
	v, err := c.Result()
	if err != nil {
		return nil, err
	}
	n, err := w.Result()
	if err != nil {
		return v, fmt.Errorf("%w: WAIT after the script: %w", ErrNotReplicated, err)
	}
	if n < int64(s.dur.Replicas) {
		return v, fmt.Errorf("%w: WAIT %d %v reached %d", ErrNotReplicated, s.dur.Replicas, s.dur.WaitTimeout, n)
	}
	return v, nil
}

// ErrNotDurable means Redis could lose an acknowledged reservation on a
// crash (DESIGN I4): it does not run as the Store's durability mode needs.
var ErrNotDurable = errors.New("redis is not durable as configured")

// Durability checks that the Redis the Store talks to runs as its mode
// needs: appendonly yes and appendfsync always (fsync modes); a primary
// with at least Replicas online replicas and min-replicas-to-write >=
// Replicas (wait modes). It returns nil or wraps ErrNotDurable naming the
// setting to fix.
func (s *Store) Durability(ctx context.Context) error {
	d := s.dur.withDefaults()
	if d.Mode.fsyncs() {
		want := map[string]string{"appendonly": "yes", "appendfsync": "always"}
		for _, k := range []string{"appendonly", "appendfsync"} {
			v, err := s.rdb.ConfigGet(ctx, k).Result()
			if err != nil {
				return fmt.Errorf("config get %s: %w", k, err)
			}
			if got := v[k]; got != want[k] {
				return fmt.Errorf("%w: mode %s needs appendonly yes and appendfsync always (%s is %q)", ErrNotDurable, d.Mode, k, got)
			}
		}
	}
	if d.Mode.waits() {
		v, err := s.rdb.ConfigGet(ctx, "min-replicas-to-write").Result()
		if err != nil {
			return fmt.Errorf("config get min-replicas-to-write: %w", err)
		}
		if n, _ := strconv.Atoi(v["min-replicas-to-write"]); n < d.Replicas {
			return fmt.Errorf("%w: mode %s needs min-replicas-to-write >= %d on the primary (it is %q)", ErrNotDurable, d.Mode, d.Replicas, v["min-replicas-to-write"])
		}
		info, err := s.rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("info replication: %w", err)
		}
		rep := ParseReplication(info)
		if rep.Role != "master" {
			return fmt.Errorf("%w: mode %s: the server is a %s, not the primary", ErrNotDurable, d.Mode, rep.Role)
		}
		if on := rep.Online(); on < d.Replicas {
			return fmt.Errorf("%w: mode %s needs %d online replicas, the primary has %d", ErrNotDurable, d.Mode, d.Replicas, on)
		}
	}
	return nil
}

// Replication is what INFO replication says of a server.
type Replication struct {
	Role     string // master or slave
	Offset   int64  // master_repl_offset
	Replicas []ReplicaInfo
}

// ReplicaInfo is one replica as its primary sees it.
type ReplicaInfo struct {
	Addr   string
	State  string // online, wait_bgsave, send_bulk...
	Offset int64
	Lag    int64 // seconds since its last acknowledgement
}

// Online counts the replicas in state online.
func (r Replication) Online() int {
	n := 0
	for _, x := range r.Replicas {
		if x.State == "online" {
			n++
		}
	}
	return n
}

// ParseReplication reads the text of INFO replication.
func ParseReplication(info string) Replication {
	var r Replication
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch {
		case k == "role":
			r.Role = v
		case k == "master_repl_offset":
			r.Offset, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "ip="):
			var x ReplicaInfo
			var ip, port string
			for _, kv := range strings.Split(v, ",") {
				f, val, _ := strings.Cut(kv, "=")
				switch f {
				case "ip":
					ip = val
				case "port":
					port = val
				case "state":
					x.State = val
				case "offset":
					x.Offset, _ = strconv.ParseInt(val, 10, 64)
				case "lag":
					x.Lag, _ = strconv.ParseInt(val, 10, 64)
				}
			}
			x.Addr = ip + ":" + port
			r.Replicas = append(r.Replicas, x)
		}
	}
	return r
}
