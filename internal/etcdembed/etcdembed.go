// Package etcdembed runs a single-member etcd inside this process: the
// default for `flashsale dev` and for tests. Production points at an
// external cluster instead.
package etcdembed

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is one embedded etcd member.
type Etcd struct {
	Endpoint string // client URL, e.g. http://127.0.0.1:2379

	e    *embed.Etcd
	once sync.Once
}

// Start starts a member with its data in dir, serving clients on
// clientAddr (host:port; port 0 picks a free one).
func Start(dir, clientAddr string) (*Etcd, error) {
	// Free ports picked here can be taken by another process before etcd
	// binds them: with free ports, try a few.
	tries := 1
	if _, port, _ := net.SplitHostPort(clientAddr); port == "0" {
		tries = 3
	}
	var err error
	for range tries {
		var e *Etcd
		if e, err = start(dir, clientAddr); err == nil {
			return e, nil
		}
	}
	return nil, err
}

func start(dir, clientAddr string) (*Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	// etcd logs expected shutdown errors at error level; the process's own
	// logs say what matters.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	clientURL, err := freeURL(clientAddr)
	if err != nil {
		return nil, err
	}
	peerURL, err := freeURL("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Server.HardStop()
		e.Close()
		return nil, errors.New("embedded etcd not ready after 30s")
	}
	return &Etcd{Endpoint: clientURL.String(), e: e}, nil
}

// Close stops the member gracefully; safe to call twice or on nil (embed's
// own Close panics on a second call).
func (x *Etcd) Close() error {
	if x == nil {
		return nil
	}
	x.once.Do(func() { x.e.Close() })
	return nil
}

// HardStop stops the member as a crash would; Close is still safe after it.
func (x *Etcd) HardStop() {
	if x == nil {
		return
	}
	x.once.Do(func() {
		x.e.Server.HardStop()
		x.e.Close()
	})
}

func freeURL(addr string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("etcd address %q: %w", addr, err)
	}
	if port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
	}
	return &url.URL{Scheme: "http", Host: addr}, nil
}
