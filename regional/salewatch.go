package regional

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/quota/layout"
)

// SaleWatcher keeps a seller's Sales cache equal to the sale specs in etcd
// that include its region, so the funnel answers not-started, paused and
// ended from memory (DESIGN §5 step 3). It reads etcd only; it never writes.
type SaleWatcher struct {
	cli    *clientv3.Client
	keys   layout.Keys
	region string
	sales  *Sales
	log    *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{}
	once   sync.Once
}

// NewSaleWatcher watches prefix's sales for region into sales.
func NewSaleWatcher(cli *clientv3.Client, prefix, region string, sales *Sales, log *slog.Logger) *SaleWatcher {
	if log == nil {
		log = slog.Default()
	}
	return &SaleWatcher{cli: cli, keys: layout.Keys{Prefix: prefix}, region: region, sales: sales,
		log: log.With("component", "salewatch", "region", region), synced: make(chan struct{})}
}

// Start loads the current specs, then follows changes until Close or ctx ends.
func (w *SaleWatcher) Start(ctx context.Context) error {
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for ctx.Err() == nil {
			if err := w.follow(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("sale watch ended; listing again", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}

// Synced is closed once the first full listing was applied.
func (w *SaleWatcher) Synced() <-chan struct{} { return w.synced }

// Close stops the watch; safe twice and on nil.
func (w *SaleWatcher) Close() error {
	if w == nil || w.cancel == nil {
		return nil
	}
	w.cancel()
	w.wg.Wait()
	return nil
}

// follow lists every sale, then applies watch events from the next revision
// on. A compaction or a broken watch returns, and the caller lists again.
func (w *SaleWatcher) follow(ctx context.Context) error {
	resp, err := w.cli.Get(ctx, w.keys.Sales(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list sales: %w", err)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		id := layout.Last(string(kv.Key))
		seen[id] = true
		w.apply(id, kv.Key, kv.Value)
	}
	for _, id := range w.sales.IDs() {
		if !seen[id] {
			w.sales.Remove(id)
		}
	}
	w.once.Do(func() { close(w.synced) })

	wch := w.cli.Watch(clientv3.WithRequireLeader(ctx), w.keys.Sales(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			id := layout.Last(string(ev.Kv.Key))
			if ev.Type == clientv3.EventTypeDelete {
				w.sales.Remove(id)
				continue
			}
			w.apply(id, ev.Kv.Key, ev.Kv.Value)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch channel closed")
}

func (w *SaleWatcher) apply(id string, key, value []byte) {
	spec, err := layout.DecodeSale(key, value)
	if err != nil {
		w.log.Error("undecodable sale spec in etcd; ignoring it", "err", err)
		return
	}
	if !spec.HasRegion(w.region) {
		w.sales.Remove(id)
		return
	}
	if err := w.sales.Put(spec); err != nil {
		w.log.Error("invalid sale spec in etcd; ignoring it", "sale", id, "err", err)
	}
}
