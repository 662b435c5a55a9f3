// Package layout is the one home of the system's contracts: the etcd key
// layout and the JSON documents shared by the coordinator, the region
// agents and the sellers (decoded here and nowhere else), and a sale's
// Redis key layout (redis.go). It does no I/O.
//
//	<prefix>/leader/                  coordinator election (concurrency.Election)
//	<prefix>/sales/<sale>             SaleSpec, written by the leader
//	<prefix>/alloc/<sale>             quota.Allocation, written by the leader (one key: one compare guards the sum)
//	<prefix>/agents/<region>/         region agent election
//	<prefix>/regions/<region>         RegionInfo, on the agent's lease
//	<prefix>/reports/<region>/<sale>  RegionReport, on the agent's lease (a dead region's report vanishes)
package layout

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	"flashsale/quota"
)

// DefaultPrefix is the etcd prefix used unless configured otherwise.
const DefaultPrefix = "/flashsale"

// Keys builds keys under one prefix.
type Keys struct{ Prefix string }

func (k Keys) p(parts ...string) string {
	return path.Join(append([]string{k.Prefix}, parts...)...)
}

func (k Keys) Leader() string                     { return k.p("leader") + "/" }
func (k Keys) Sales() string                      { return k.p("sales") + "/" }
func (k Keys) Sale(sale string) string            { return k.p("sales", sale) }
func (k Keys) Allocs() string                     { return k.p("alloc") + "/" }
func (k Keys) Alloc(sale string) string           { return k.p("alloc", sale) }
func (k Keys) AgentElection(region string) string { return k.p("agents", region) + "/" }
func (k Keys) Regions() string                    { return k.p("regions") + "/" }
func (k Keys) Region(region string) string        { return k.p("regions", region) }
func (k Keys) Reports() string                    { return k.p("reports") + "/" }
func (k Keys) RegionReports(region string) string { return k.p("reports", region) + "/" }
func (k Keys) Report(region, sale string) string  { return k.p("reports", region, sale) }

// Last returns the last path element of key (a sale id or region name).
func Last(key string) string { return key[strings.LastIndex(key, "/")+1:] }

// SaleState is the operator-set state of a sale. Whether it is open also
// depends on the clock (StartsAt, EndsAt) and on stock.
type SaleState string

const (
	SaleActive SaleState = "active" // sells between StartsAt and EndsAt
	SalePaused SaleState = "paused"
	SaleEnded  SaleState = "ended"
)

// RegionSpec is one region's place in a sale.
type RegionSpec struct {
	Name   string `json:"name"`
	Weight int64  `json:"weight,omitempty"`
	Min    int64  `json:"min,omitempty"`
	Max    int64  `json:"max,omitempty"`
}

// SaleSpec is a sale as operators define it.
type SaleSpec struct {
	ID             string        `json:"id"`
	Total          int64         `json:"total"`
	PerUserLimit   int64         `json:"perUserLimit"`
	StartsAt       time.Time     `json:"startsAt"`
	EndsAt         time.Time     `json:"endsAt"`
	ReservationTTL time.Duration `json:"reservationTTL"`
	Regions        []RegionSpec  `json:"regions"`
	State          SaleState     `json:"state"`
}

// RegionInfo is how a region is reached, registered by its agent.
type RegionInfo struct {
	Name      string `json:"name"`
	Endpoint  string `json:"endpoint"` // shopper base URL, for 307 redirects
	RedisAddr string `json:"redisAddr,omitempty"`
	Fence     int64  `json:"fence"` // the agent's election revision

	// The region's gossip cluster (regional/gossip) as the agent's process
	// sees it: where that process gossips (a seed for new sellers) and the
	// live sellers by name, sorted. Empty when the region does not gossip.
	Gossip  string   `json:"gossip,omitempty"`
	Sellers []string `json:"sellers,omitempty"`

	// What readiness needs to know about the region's Redis, as the agent
	// last checked it, at CheckedAt (unix ms on the agent's clock).
	Durable       bool  `json:"durable"`       // appendonly yes and appendfsync always
	ScriptsLoaded bool  `json:"scriptsLoaded"` // the Lua scripts are in Redis' cache
	CheckedAt     int64 `json:"checkedAt"`
}

// RegionReport is a region agent's report for one sale. ReleaseID names the
// pending release the agent executed; with ReleasedLocal it is the ack.
type RegionReport struct {
	quota.Report
	Region    string `json:"region"`
	Sale      string `json:"sale"`
	ReleaseID string `json:"releaseId,omitempty"`
	Fence     int64  `json:"fence"`
	Halted    bool   `json:"halted,omitempty"`
}

// HasRegion reports whether region takes part in the sale.
func (s SaleSpec) HasRegion(region string) bool {
	for _, r := range s.Regions {
		if r.Name == region {
			return true
		}
	}
	return false
}

// ReportKey splits a report key (<prefix>/reports/<region>/<sale>) into
// its region and sale; ok is false for any other key.
func (k Keys) ReportKey(key string) (region, sale string, ok bool) {
	rest, found := strings.CutPrefix(key, k.Reports())
	if !found {
		return "", "", false
	}
	region, sale, ok = strings.Cut(rest, "/")
	return region, sale, ok && region != "" && sale != "" && !strings.Contains(sale, "/")
}

// DecodeReport decodes a report stored at key: region and sale come from
// the key (what the agent's lease owns), whatever the document says.
func (k Keys) DecodeReport(key, value []byte) (RegionReport, error) {
	region, sale, ok := k.ReportKey(string(key))
	if !ok {
		return RegionReport{}, fmt.Errorf("report under an unexpected key %q", key)
	}
	var rep RegionReport
	if err := json.Unmarshal(value, &rep); err != nil {
		return RegionReport{}, fmt.Errorf("report %s: %w", key, err)
	}
	rep.Region, rep.Sale = region, sale
	return rep, nil
}

// The documents are decoded here and nowhere else, each wrapped with its
// key so that an unreadable one names itself.

// DecodeSale decodes a sale spec stored at key.
func DecodeSale(key, value []byte) (SaleSpec, error) {
	var spec SaleSpec
	if err := json.Unmarshal(value, &spec); err != nil {
		return SaleSpec{}, fmt.Errorf("sale %s: %w", key, err)
	}
	return spec, nil
}

// DecodeAlloc decodes an allocation stored at key; its Regions map is
// never nil.
func DecodeAlloc(key, value []byte) (*quota.Allocation, error) {
	var a quota.Allocation
	if err := json.Unmarshal(value, &a); err != nil {
		return nil, fmt.Errorf("allocation %s: %w", key, err)
	}
	if a.Regions == nil {
		a.Regions = map[string]*quota.RegionAlloc{}
	}
	return &a, nil
}

// DecodeRegion decodes a region's info stored at key.
func DecodeRegion(key, value []byte) (RegionInfo, error) {
	var info RegionInfo
	if err := json.Unmarshal(value, &info); err != nil {
		return RegionInfo{}, fmt.Errorf("region %s: %w", key, err)
	}
	return info, nil
}
