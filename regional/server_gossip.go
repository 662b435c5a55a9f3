package regional

import (
	"encoding/json"
	"time"

	"flashsale/regional/gossip"
	"flashsale/regional/redisstore"
)

// The region's sellers gossip (regional/gossip): each one publishes what it
// reads from Redis, so a sellout, a halt or returning stock seen by one
// seller reaches the others within a gossip round instead of their next
// read; and each enforces 1/n of the per-user and per-IP limits, n being
// the live sellers. Redis stays the authority: a seller that missed a
// message still reads its counters every RefreshInterval (the safety net,
// 1 s when gossip is on) and every script answer is Redis' own.

// GossipRefreshInterval is the counter read of a seller that gossips: a
// safety net, since the region's other sellers' reads reach it too.
const GossipRefreshInterval = time.Second

// stockBody is a KindStock state's body: what Store.Stocks read.
type stockBody struct {
	C redisstore.Counters `json:"c"`
	V redisstore.SaleView `json:"v"`
}

// startGossip joins the region's cluster when configured.
func (s *Server) startGossip() error {
	if s.cfg.Gossip == nil {
		return nil
	}
	cfg := *s.cfg.Gossip
	cfg.Region, cfg.Role = s.cfg.Region, gossip.RoleSeller
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	cfg.OnState = s.gossiped
	cfg.OnMembers = s.membersChanged
	n, err := gossip.Start(cfg)
	if err != nil {
		return err
	}
	s.gossip = n
	s.membersChanged()
	return nil
}

// publishStock gossips a sale's stock as this seller just read it.
func (s *Server) publishStock(sale string, st redisstore.Stock) {
	if s.gossip == nil || st.ReadAt == 0 {
		return
	}
	body, err := json.Marshal(stockBody{C: st.Counters, V: st.View})
	if err == nil {
		_, err = s.gossip.Publish(gossip.State{Sale: sale, Kind: gossip.KindStock, Version: st.ReadAt, Body: body})
	}
	if err != nil {
		s.log.Warn("gossip: stock not published", "sale", sale, "err", err)
	}
}

// publishDemand gossips this seller's cumulative attempts for each sale
// that had new ones (the demand loop's goroutine only).
func (s *Server) publishDemand() {
	for sale, n := range s.demand.Drain() {
		s.demandTotal[sale] += n
		if err := s.gossip.PublishDemand(sale, s.demandTotal[sale]); err != nil {
			s.log.Warn("gossip: demand not published", "sale", sale, "err", err)
		}
	}
}

// gossiped applies a state another member published (memberlist's
// goroutine: no blocking).
func (s *Server) gossiped(st gossip.State) {
	if st.Kind != gossip.KindStock || st.Origin == s.gossipName() {
		return
	}
	sale := s.sales.Get(st.Sale)
	if sale == nil {
		return
	}
	var b stockBody
	if err := json.Unmarshal(st.Body, &b); err != nil {
		s.log.Warn("gossip: undecodable stock", "sale", st.Sale, "origin", st.Origin, "err", err)
		return
	}
	if sale.observe(redisstore.Stock{Counters: b.C, View: b.V, ReadAt: st.Version}, sale.marksNow()) {
		s.m.gossipApplied.Inc()
	}
}

func (s *Server) gossipName() string {
	if s.gossip == nil {
		return ""
	}
	return s.gossip.Name()
}

// membersChanged re-divides the rate limits among the live sellers.
func (s *Server) membersChanged() {
	n := s.liveSellers()
	s.userLim.setShare(n)
	s.ipLim.setShare(n)
	s.m.sellers.Set(float64(n))
}

// liveSellers is the number of live sellers in the region as membership
// sees it; 1 without gossip.
func (s *Server) liveSellers() int {
	if s.gossip == nil {
		return 1
	}
	return s.gossip.Sellers()
}

// GossipNode is this seller's member of the region's cluster (nil without
// gossip): the region agent in the same process reads membership and
// demand from it.
func (s *Server) GossipNode() *gossip.Node { return s.gossip }

// GossipAddr is where this seller gossips ("" without gossip).
func (s *Server) GossipAddr() string {
	if s.gossip == nil {
		return ""
	}
	return s.gossip.Addr()
}

// JoinGossip adds a member to join, such as the gossip address the
// region's agent registers in etcd (no-op without gossip).
func (s *Server) JoinGossip(addr string) error {
	if s.gossip == nil {
		return nil
	}
	return s.gossip.AddSeed(addr)
}

// Members lists the region's live members (nil without gossip).
func (s *Server) Members() []gossip.Member {
	if s.gossip == nil {
		return nil
	}
	return s.gossip.Members()
}

// shareLoad puts this seller's Redis work in flight into its membership
// metadata, when it changed (every HealthInterval).
func (s *Server) shareLoad() {
	if s.gossip == nil {
		return
	}
	load := int64(s.adm.redis.InFlight())
	if load == s.sharedLoad {
		return
	}
	if err := s.gossip.SetLoad(load); err != nil {
		s.log.Debug("gossip: load not shared", "err", err)
		return
	}
	s.sharedLoad = load
}
