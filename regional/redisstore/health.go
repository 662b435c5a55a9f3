package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Check is one readiness check of a region's Redis; Detail says what was
// found and, when it failed, what to fix.
type Check struct {
	Name   string // primary, durability, replicas, sentinel
	OK     bool
	Detail string
}

// ParseConn reads a Conn as Conn.String writes it: "host:port", or
// "sentinel:MASTER@host:port,host:port,...".
func ParseConn(s string) (Conn, error) {
	rest, ok := strings.CutPrefix(s, "sentinel:")
	if !ok {
		c := Conn{Addr: s}
		return c, c.Validate()
	}
	name, addrs, ok := strings.Cut(rest, "@")
	if !ok || name == "" || addrs == "" {
		return Conn{}, fmt.Errorf("redis %q: want sentinel:MASTER@host:port,host:port,...", s)
	}
	c := Conn{MasterName: name, Sentinels: strings.Split(addrs, ",")}
	return c, c.Validate()
}

// CheckRedis checks a region's Redis, reached as c, for a region running
// with durability d: the primary answers; it runs as d needs
// (Store.Durability); its replicas are online and within
// min-replicas-max-lag (when it has or needs any); with Sentinel, that
// every sentinel answers, names the same primary and that the quorum and
// the failover authorization can be reached (SENTINEL CKQUORUM). It reads
// only.
func CheckRedis(ctx context.Context, c Conn, d Durability) []Check {
	d = d.withDefaults()
	var out []Check
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if len(c.Sentinels) > 0 {
		checkSentinels(ctx, c, add)
	}
	rdb := NewClient(c)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		add("primary", false, "%s does not answer: %v", c, err)
		return out
	}
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		add("primary", false, "INFO replication on %s: %v", c, err)
		return out
	}
	rep := ParseReplication(info)
	add("primary", rep.Role == "master", "%s answers as %s", c, rep.Role)
	s := NewStore(rdb, "").WithDurability(d)
	if err := s.Durability(ctx); err != nil {
		add("durability", false, "%v: set it on every node (any may become the primary), or run this region with another mode", err)
	} else {
		add("durability", true, "runs as %s needs", d)
	}
	if len(rep.Replicas) == 0 && !d.Mode.waits() && len(c.Sentinels) == 0 {
		return out // a single node, by design
	}
	maxLag := int64(10)
	if v, err := rdb.ConfigGet(ctx, "min-replicas-max-lag").Result(); err == nil {
		if n, err := strconv.ParseInt(v["min-replicas-max-lag"], 10, 64); err == nil && n > 0 {
			maxLag = n
		}
	}
	var parts []string
	ok, good := true, 0
	for _, r := range rep.Replicas {
		parts = append(parts, fmt.Sprintf("%s %s lag %ds, %d bytes behind", r.Addr, r.State, r.Lag, rep.Offset-r.Offset))
		if r.State == "online" && r.Lag <= maxLag {
			good++
		}
	}
	want := 1
	if d.Mode.waits() {
		want = d.Replicas
	}
	if good < want {
		ok = false
		parts = append(parts, fmt.Sprintf("want %d online within %ds (min-replicas-max-lag): start or repair a replica (replicaof the primary)", want, maxLag))
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	add("replicas", ok, "%s", strings.Join(parts, "; "))
	return out
}

func checkSentinels(ctx context.Context, c Conn, add func(string, bool, string, ...any)) {
	masters := map[string]bool{}
	var answering int
	var quorum string
	for _, a := range c.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, Password: c.Password, MaxRetries: -1})
		m, err := sc.GetMasterAddrByName(ctx, c.MasterName).Result()
		if err == nil && len(m) == 2 {
			answering++
			masters[m[0]+":"+m[1]] = true
			if quorum == "" {
				if q, err := sc.CkQuorum(ctx, c.MasterName).Result(); err == nil {
					quorum = q
				} else {
					quorum = err.Error()
				}
			}
		}
		_ = sc.Close()
	}
	ok := answering == len(c.Sentinels) && len(masters) == 1 && strings.HasPrefix(quorum, "OK")
	detail := fmt.Sprintf("%d of %d sentinels answer for %s", answering, len(c.Sentinels), c.MasterName)
	if len(masters) > 1 {
		detail += fmt.Sprintf("; they name %d different primaries (a failover under way, or a split)", len(masters))
	}
	if answering < len(c.Sentinels) {
		detail += ": start the missing ones (redis-sentinel) so a failover keeps its quorum"
	}
	if quorum != "" {
		detail += "; CKQUORUM: " + quorum
	}
	add("sentinel", ok, "%s", detail)
}
