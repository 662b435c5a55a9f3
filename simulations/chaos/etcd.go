package chaos

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"flashsale/internal/childproc"
)

// etcdCluster is a three-member etcd inside this process: a member can be
// crashed (HardStop) and started again from its data dir, as a lost and
// replaced machine would be.
type etcdCluster struct {
	mu      sync.Mutex
	members []*etcdMember
}

type etcdMember struct {
	cfg *embed.Config
	e   *embed.Etcd // nil while stopped
	// Client is host:port of the member's client listener.
	Client string
}

func startEtcdCluster(dir string, n int) (*etcdCluster, error) {
	c := &etcdCluster{}
	var initial []string
	for i := range n {
		peer, err := childproc.FreePort()
		if err != nil {
			return nil, err
		}
		client, err := childproc.FreePort()
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Name = "m" + strconv.Itoa(i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(client)}
		pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peer)}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		// Short elections: a lost leader is replaced within about a second.
		cfg.TickMs, cfg.ElectionMs = 50, 500
		initial = append(initial, cfg.Name+"="+pu.String())
		c.members = append(c.members, &etcdMember{cfg: cfg, Client: cu.Host})
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	// Members wait for each other's votes: start them all, then wait.
	var errs []error
	for _, m := range c.members {
		e, err := embed.StartEtcd(m.cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd %s: %w", m.cfg.Name, err))
			continue
		}
		m.e = e
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	for _, m := range c.members {
		if err := waitMember(m.e); err != nil {
			c.Close()
			return nil, fmt.Errorf("etcd %s: %w", m.cfg.Name, err)
		}
	}
	return c, nil
}

func waitMember(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-time.After(30 * time.Second):
		return errors.New("not ready after 30s")
	}
}

// Endpoints lists the members' client addresses.
func (c *etcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.Client)
	}
	return eps
}

// Leader returns the index of the member that leads, or -1.
func (c *etcdCluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.e != nil && m.e.Server.Leader() == m.e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Crash stops member i as a crash would.
func (c *etcdCluster) Crash(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[i]; m.e != nil {
		m.e.Server.HardStop()
		m.e.Close()
		m.e = nil
	}
}

// Restart starts a crashed member again from its data dir.
func (c *etcdCluster) Restart(i int) error {
	c.mu.Lock()
	m := c.members[i]
	if m.e != nil {
		c.mu.Unlock()
		return nil
	}
	m.cfg.ClusterState = embed.ClusterStateFlagExisting
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("restart etcd %s: %w", m.cfg.Name, err)
	}
	m.e = e
	c.mu.Unlock()
	return waitMember(e)
}

// Close stops every member; safe to call twice.
func (c *etcdCluster) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range c.members {
		if m.e == nil {
			continue
		}
		e := m.e
		m.e = nil
		wg.Go(func() {
			// A graceful close waits for peers that may be gone: crash it.
			e.Server.HardStop()
			e.Close()
		})
	}
	wg.Wait()
}
