package loadgen

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// RegionRedis is one region's Redis, as the verifier reads it.
type RegionRedis struct {
	Region string
	Client redis.UniversalClient
}

// RegionCounts is what one region's Redis says about a sale.
type RegionCounts struct {
	Region        string `json:"region"`
	GrantedSeen   int64  `json:"granted_seen"`
	ReleasedLocal int64  `json:"released_local"`
	Sold          int64  `json:"sold"`
	Reserved      int64  `json:"reserved"`
	Users         int    `json:"users"` // users holding at least one unit
	// StreamHeld is reserved events minus cancelled and expired ones in
	// the order stream: a second witness of sold + reserved.
	StreamHeld int64 `json:"stream_held"`
}

// Verdict is the verifier's answer. Violations is empty when every check
// passed.
type Verdict struct {
	Total      int64          `json:"total"`
	Limit      int64          `json:"limit"`
	Sold       int64          `json:"sold"`
	Reserved   int64          `json:"reserved"`
	Regions    []RegionCounts `json:"regions"`
	MaxPerUser int64          `json:"max_per_user"`
	Violations []string       `json:"violations,omitempty"`
}

// OK says no invariant was violated.
func (v Verdict) OK() bool { return len(v.Violations) == 0 }

// Redis keys of a sale (the layout in regional/store.go), written out here
// rather than imported so that the verifier is an independent witness.
func saleKey(sale, suffix string) string { return "{sale:" + sale + "}:" + suffix }

// Verify reads every region's Redis after a run and checks, for sale:
//   - I1: sold + reserved summed over regions <= total, and each region
//     within its own ceiling (granted_seen - released_local);
//   - I3: no user holds more than limit units, summed over regions (from
//     the users hashes, and again from the order streams);
//   - the ledger agrees with the order stream (held units counted both ways).
//
// An error means Redis could not be read; a violation is in the Verdict.
func Verify(ctx context.Context, regions []RegionRedis, sale string, total, limit int64) (Verdict, error) {
	v := Verdict{Total: total, Limit: limit}
	perUser := map[string]int64{}       // from the users hashes
	perUserStream := map[string]int64{} // from the order streams
	for _, rr := range regions {
		rc, err := readRegion(ctx, rr, sale, perUser, perUserStream)
		if err != nil {
			return v, err
		}
		v.Regions = append(v.Regions, rc)
		v.Sold += rc.Sold
		v.Reserved += rc.Reserved
		if rc.Sold+rc.Reserved > rc.GrantedSeen-rc.ReleasedLocal {
			v.Violations = append(v.Violations, fmt.Sprintf("I1: region %s holds sold %d + reserved %d above its ceiling %d",
				rc.Region, rc.Sold, rc.Reserved, rc.GrantedSeen-rc.ReleasedLocal))
		}
		if rc.StreamHeld != rc.Sold+rc.Reserved {
			v.Violations = append(v.Violations, fmt.Sprintf("ledger vs stream: region %s ledger holds %d (sold %d + reserved %d), its order stream %d",
				rc.Region, rc.Sold+rc.Reserved, rc.Sold, rc.Reserved, rc.StreamHeld))
		}
	}
	if v.Sold+v.Reserved > total {
		v.Violations = append(v.Violations, fmt.Sprintf("I1 oversell: sold %d + reserved %d = %d above total %d",
			v.Sold, v.Reserved, v.Sold+v.Reserved, total))
	}
	for _, m := range []struct {
		name string
		m    map[string]int64
	}{{"users hashes", perUser}, {"order streams", perUserStream}} {
		var over []string
		for u, n := range m.m {
			v.MaxPerUser = max(v.MaxPerUser, n)
			if n > limit {
				over = append(over, fmt.Sprintf("%s=%d", u, n))
			}
		}
		if len(over) > 0 {
			sort.Strings(over)
			if len(over) > 10 {
				over = append(over[:10], fmt.Sprintf("and %d more", len(over)-10))
			}
			v.Violations = append(v.Violations, fmt.Sprintf("I3: %d users above the limit %d in the %s: %v", len(over), limit, m.name, over))
		}
	}
	return v, nil
}

// readLedger reads a region's counters of sale.
func readLedger(ctx context.Context, rr RegionRedis, sale string) (RegionCounts, error) {
	rc := RegionCounts{Region: rr.Region}
	vals, err := rr.Client.HMGet(ctx, saleKey(sale, "ledger"), "granted_seen", "released_local", "sold", "reserved").Result()
	if err != nil {
		return rc, fmt.Errorf("verify %s: ledger: %w", rr.Region, err)
	}
	n := make([]int64, len(vals))
	for i, e := range vals {
		s, _ := e.(string)
		if s == "" {
			continue
		}
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return rc, fmt.Errorf("verify %s: ledger field %d %q: %w", rr.Region, i, s, err)
		}
	}
	rc.GrantedSeen, rc.ReleasedLocal, rc.Sold, rc.Reserved = n[0], n[1], n[2], n[3]
	return rc, nil
}

func readRegion(ctx context.Context, rr RegionRedis, sale string, perUser, perUserStream map[string]int64) (RegionCounts, error) {
	rc, err := readLedger(ctx, rr, sale)
	if err != nil {
		return rc, err
	}

	var cursor uint64
	for {
		kv, next, err := rr.Client.HScan(ctx, saleKey(sale, "users"), cursor, "", 1000).Result()
		if err != nil {
			return rc, fmt.Errorf("verify %s: users: %w", rr.Region, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			c, err := strconv.ParseInt(kv[i+1], 10, 64)
			if err != nil {
				return rc, fmt.Errorf("verify %s: user %s count %q: %w", rr.Region, kv[i], kv[i+1], err)
			}
			if c > 0 {
				rc.Users++
			}
			perUser[kv[i]] += c
		}
		if cursor = next; cursor == 0 {
			break
		}
	}

	start := "-"
	for {
		msgs, err := rr.Client.XRangeN(ctx, saleKey(sale, "orders"), start, "+", 1000).Result()
		if err != nil {
			return rc, fmt.Errorf("verify %s: orders: %w", rr.Region, err)
		}
		for _, m := range msgs {
			user, _ := m.Values["user"].(string)
			switch m.Values["type"] {
			case "reserved":
				rc.StreamHeld++
				perUserStream[user]++
			case "cancelled", "expired":
				rc.StreamHeld--
				perUserStream[user]--
			}
		}
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return rc, nil
}
