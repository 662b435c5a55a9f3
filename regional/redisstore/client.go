package redisstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Conn says how a region's sellers and agent reach its Redis: one address,
// or the primary of a group Sentinel watches (MasterName and Sentinels),
// through go-redis's failover client, which asks the sentinels for the
// primary and follows a failover (its pool is closed on +switch-master,
// and every new connection checks that it reached a primary).
type Conn struct {
	Addr       string   // host:port; ignored when Sentinels are set
	Sentinels  []string // host:port of the sentinels
	MasterName string   // Sentinel's name of the group
	Password   string
	PoolSize   int // 0: go-redis's default
}

// Validate names what is missing.
func (c Conn) Validate() error {
	switch {
	case len(c.Sentinels) > 0 && c.MasterName == "":
		return errors.New("redis: sentinels given without a master name")
	case len(c.Sentinels) == 0 && c.MasterName != "":
		return fmt.Errorf("redis: master name %q given without sentinel addresses", c.MasterName)
	case len(c.Sentinels) == 0 && c.Addr == "":
		return errors.New("redis: no address and no sentinels")
	}
	return nil
}

// String names the Redis for logs and readiness.
func (c Conn) String() string {
	if len(c.Sentinels) > 0 {
		return "sentinel:" + c.MasterName + "@" + strings.Join(c.Sentinels, ",")
	}
	return c.Addr
}

// NewClient returns a client of c: a failover client when sentinels are
// set, a plain one otherwise.
func NewClient(c Conn) redis.UniversalClient {
	if len(c.Sentinels) > 0 {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.Sentinels,
			Password: c.Password, PoolSize: c.PoolSize,
		})
	}
	return redis.NewClient(&redis.Options{Addr: c.Addr, Password: c.Password, PoolSize: c.PoolSize})
}
