package loadgen

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"flashsale/regional/orders"
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
	// Stranded is the region's ceiling less what it holds: units granted
	// to it that no buyer got, though buyers elsewhere may have wanted
	// them.
	Stranded int64 `json:"stranded"`
}

// OrderStore is an SQL order store the verifier reads. Region is the
// region whose rows to read; "" reads every region's (one store shared by
// all regions).
type OrderStore struct {
	Region string
	Store  orders.Store
}

// OrderCounts is what the order stores say about one region's orders.
type OrderCounts struct {
	Region    string `json:"region"`
	Rows      int64  `json:"rows"`
	Live      int64  `json:"live"` // reserved or confirmed: holding a unit
	Confirmed int64  `json:"confirmed"`
}

// VerifyOptions asks VerifyWith for checks beyond Verify's.
type VerifyOptions struct {
	// ExpectSellout is the seed load test's strict check, for a run whose
	// demand exceeds the stock: sold + reserved must equal the total, not
	// only stay within it, or units were stranded or never granted.
	ExpectSellout bool
	// Orders are the SQL order stores: I3 is checked again from their
	// rows, and no region may have more confirmed rows than its ledger
	// has sold. A seller writes only its own region's rows. A region's
	// rows lag its stream but follow it in order, so they never show a
	// user more units than the stream did; only a user who gave a unit
	// back in one region and bought in another could be counted twice
	// before the first region drains (the generator's users buy at home
	// only).
	Orders []OrderStore
	// SoldOutAnswers is how many 410 sold_out answers the run got
	// (Report.Answers["sold_out"]). A seller says sold_out only when every
	// unit of the sale is sold (DESIGN L1), and sold never goes down, so
	// after any such answer the sale must end with sold == total: a sale
	// that ends with units unsold told buyers "sold out" while it had
	// stock. The verifier cannot know when each answer was given; this is
	// the check the end state allows.
	SoldOutAnswers int
}

// Verdict is the verifier's answer. Violations is empty when every check
// passed.
type Verdict struct {
	Total    int64 `json:"total"`
	Limit    int64 `json:"limit"`
	Sold     int64 `json:"sold"`
	Reserved int64 `json:"reserved"`
	Held     int64 `json:"held"` // sold + reserved
	// Stranded sums the regions' Stranded; Ungranted is the part of the
	// total in no region's ceiling. Held + Stranded + Ungranted is the
	// total when the ceilings do not exceed it.
	Stranded      int64          `json:"stranded"`
	Ungranted     int64          `json:"ungranted"`
	ExpectSellout bool           `json:"expect_sellout,omitempty"`
	Regions       []RegionCounts `json:"regions"`
	Orders        []OrderCounts  `json:"orders,omitempty"` // by region, with VerifyOptions.Orders
	MaxPerUser    int64          `json:"max_per_user"`
	Violations    []string       `json:"violations,omitempty"`
}

// OK says no invariant was violated.
func (v Verdict) OK() bool { return len(v.Violations) == 0 }

// Redis keys of a sale (the layout in regional/redisstore/store.go), written out here
// rather than imported so that the verifier is an independent witness.
func saleKey(sale, suffix string) string { return "{sale:" + sale + "}:" + suffix }

// Verify reads every region's Redis after a run and checks, for sale:
//   - I1: sold + reserved summed over regions <= total, and each region
//     within its own ceiling (granted_seen - released_local);
//   - I3: no user holds more than limit units, summed over regions (from
//     the users hashes, and again from the order streams);
//   - the ledger agrees with the order stream (held units counted both ways);
//   - no reservation id was made twice, in one region or across regions
//     (ids are ULIDs, unique across regions, so order rows merge).
//
// It also counts the units held, stranded in a region and never granted.
// An error means Redis could not be read; a violation is in the Verdict.
func Verify(ctx context.Context, regions []RegionRedis, sale string, total, limit int64) (Verdict, error) {
	return VerifyWith(ctx, regions, sale, total, limit, VerifyOptions{})
}

// VerifyWith is Verify with the checks opts asks for as well: the
// sellout, and I3 and sold against the SQL order stores. An error means
// Redis or an order store could not be read.
func VerifyWith(ctx context.Context, regions []RegionRedis, sale string, total, limit int64, opts VerifyOptions) (Verdict, error) {
	v := Verdict{Total: total, Limit: limit, ExpectSellout: opts.ExpectSellout}
	perUser := map[string]int64{}       // from the users hashes
	perUserStream := map[string]int64{} // from the order streams
	made := map[string][]string{}       // reservation id -> regions of its reserved events
	var ceilings int64
	for _, rr := range regions {
		rc, err := readRegion(ctx, rr, sale, perUser, perUserStream, made)
		if err != nil {
			return v, err
		}
		ceiling := rc.GrantedSeen - rc.ReleasedLocal
		rc.Stranded = max(0, ceiling-rc.Sold-rc.Reserved)
		v.Regions = append(v.Regions, rc)
		v.Sold += rc.Sold
		v.Reserved += rc.Reserved
		v.Stranded += rc.Stranded
		ceilings += ceiling
		if rc.Sold+rc.Reserved > ceiling {
			v.Violations = append(v.Violations, fmt.Sprintf("I1: region %s holds sold %d + reserved %d above its ceiling %d",
				rc.Region, rc.Sold, rc.Reserved, ceiling))
		}
		if rc.StreamHeld != rc.Sold+rc.Reserved {
			v.Violations = append(v.Violations, fmt.Sprintf("ledger vs stream: region %s ledger holds %d (sold %d + reserved %d), its order stream %d",
				rc.Region, rc.Sold+rc.Reserved, rc.Sold, rc.Reserved, rc.StreamHeld))
		}
	}
	var twice []string
	for id, in := range made {
		if len(in) > 1 {
			twice = append(twice, id+" in "+strings.Join(in, ","))
		}
	}
	if len(twice) > 0 {
		sort.Strings(twice)
		n := len(twice)
		if n > 10 {
			twice = append(twice[:10], fmt.Sprintf("and %d more", n-10))
		}
		v.Violations = append(v.Violations, fmt.Sprintf("ids: %d reservation ids made twice: %v", n, twice))
	}
	v.Held = v.Sold + v.Reserved
	v.Ungranted = max(0, total-ceilings)
	if v.Held > total {
		v.Violations = append(v.Violations, fmt.Sprintf("I1 oversell: sold %d + reserved %d = %d above total %d",
			v.Sold, v.Reserved, v.Held, total))
	}
	// Above the total is the oversell already reported; below it, say
	// where the missing units sit.
	if opts.ExpectSellout && v.Held < total {
		where := make([]string, len(v.Regions))
		for i, rc := range v.Regions {
			where[i] = fmt.Sprintf("%s held %d stranded %d", rc.Region, rc.Sold+rc.Reserved, rc.Stranded)
		}
		v.Violations = append(v.Violations, fmt.Sprintf("sellout: held %d (sold %d + reserved %d) of total %d, %d unsold: %s; ungranted %d",
			v.Held, v.Sold, v.Reserved, total, total-v.Held, strings.Join(where, ", "), v.Ungranted))
	}
	if opts.SoldOutAnswers > 0 && v.Sold < total {
		v.Violations = append(v.Violations, fmt.Sprintf("L1: %d answers were 410 sold_out but the sale ended with sold %d (+ reserved %d) of total %d: buyers were told sold out while it had stock",
			opts.SoldOutAnswers, v.Sold, v.Reserved, total))
	}
	// Each witness of the per-user counts is checked on its own: a bug
	// may show in one and not the others.
	witnesses := []struct {
		name string
		m    map[string]int64
	}{{"users hashes", perUser}, {"order streams", perUserStream}, {"order stores", nil}}
	if len(opts.Orders) > 0 {
		counts, perUserSQL, err := readOrders(ctx, opts.Orders, sale)
		if err != nil {
			return v, err
		}
		v.Orders = counts
		witnesses[2].m = perUserSQL
		sold := map[string]int64{}
		for _, rc := range v.Regions {
			sold[rc.Region] = rc.Sold
		}
		// The stream drains into SQL with a lag, so SQL may confirm fewer
		// than the ledger sold, never more. A region whose Redis was not
		// given has nothing to compare with.
		for _, oc := range counts {
			if s, ok := sold[oc.Region]; ok && oc.Confirmed > s {
				v.Violations = append(v.Violations, fmt.Sprintf("orders vs ledger: region %s has %d confirmed orders in SQL, its ledger sold %d",
					oc.Region, oc.Confirmed, s))
			}
		}
	}
	for _, m := range witnesses {
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

// readRegion reads one region's ledger, users hash and order stream, adding
// to perUser, perUserStream and made (the regions each reservation id was
// made in, from the reserved events).
func readRegion(ctx context.Context, rr RegionRedis, sale string, perUser, perUserStream map[string]int64, made map[string][]string) (RegionCounts, error) {
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
				if id, _ := m.Values["resv"].(string); id != "" {
					made[id] = append(made[id], rr.Region)
				}
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

// readOrders counts the stores' rows of sale by region, and each user's
// live rows. A row read from two stores (one shared store given for
// several regions that overlap) counts once, in its furthest state.
func readOrders(ctx context.Context, stores []OrderStore, sale string) ([]OrderCounts, map[string]int64, error) {
	rows := map[[2]string]orders.Order{}
	for _, st := range stores {
		list, err := st.Store.Orders(ctx, sale, st.Region)
		if err != nil {
			return nil, nil, fmt.Errorf("verify orders %q: %w", st.Region, err)
		}
		for _, o := range list {
			k := [2]string{o.Region, o.Resv}
			if old, ok := rows[k]; !ok || !old.State.Terminal() {
				rows[k] = o
			}
		}
	}
	by := map[string]*OrderCounts{}
	perUser := map[string]int64{}
	for _, o := range rows {
		oc := by[o.Region]
		if oc == nil {
			oc = &OrderCounts{Region: o.Region}
			by[o.Region] = oc
		}
		oc.Rows++
		switch o.State {
		case orders.Confirmed:
			oc.Confirmed++
			fallthrough
		case orders.Reserved:
			oc.Live++
			perUser[o.User]++
		}
	}
	out := make([]OrderCounts, 0, len(by))
	for _, oc := range by {
		out = append(out, *oc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out, perUser, nil
}
