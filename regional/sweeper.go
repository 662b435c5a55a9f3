package regional

import (
	"context"
	"errors"
	"flashsale/regional/redisstore"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SweeperConfig bounds the work of one sweep.
type SweeperConfig struct {
	Interval   time.Duration // between sweeps
	Batch      int           // reservations per Expire call
	MaxBatches int           // Expire calls per sale per sweep, so one sale cannot starve the others
	Timeout    time.Duration // per Expire call
	Now        func() time.Time
	// OnExpired is told how many reservations of a sale were expired by
	// one Expire call (metrics, and clearing the sale's sold-out flag).
	OnExpired func(sale string, n int)
	// OnError is told about a failed Expire call.
	OnError func(sale string, err error)
}

// Sweeper ends reservations whose time is up, returning their units to
// stock (DESIGN I4: every reservation ends confirmed, cancelled or
// expired). Several sellers of a region may sweep at once: the expire
// script ends each reservation once.
type Sweeper struct {
	store *redisstore.Store
	sales *Sales
	cfg   SweeperConfig
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewSweeper returns a sweeper over the sales in sales.
func NewSweeper(store *redisstore.Store, sales *Sales, cfg SweeperConfig, log *slog.Logger) (*Sweeper, error) {
	switch {
	case store == nil || sales == nil:
		return nil, errors.New("sweeper: store and sales are required")
	case cfg.Interval <= 0:
		return nil, fmt.Errorf("sweeper: Interval %v: want > 0", cfg.Interval)
	case cfg.Batch < 1:
		return nil, fmt.Errorf("sweeper: Batch %d: want >= 1", cfg.Batch)
	case cfg.MaxBatches < 1:
		return nil, fmt.Errorf("sweeper: MaxBatches %d: want >= 1", cfg.MaxBatches)
	case cfg.Timeout <= 0:
		return nil, fmt.Errorf("sweeper: Timeout %v: want > 0", cfg.Timeout)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sweeper{store: store, sales: sales, cfg: cfg, log: log.With("component", "sweeper")}, nil
}

// Start sweeps every interval until ctx ends or Close.
func (w *Sweeper) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done != nil {
		return errors.New("sweeper: already started")
	}
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go w.loop(ctx, w.done)
	return nil
}

func (w *Sweeper) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := w.Sweep(ctx)
		// Log transitions only: a Redis outage would otherwise log every tick.
		if err != nil && !failing && ctx.Err() == nil {
			w.log.Warn("sweep failed; retrying every interval", "err", err)
		} else if err == nil && failing {
			w.log.Info("sweep recovered")
		}
		failing = err != nil
	}
}

// Sweep runs one pass over every known sale and returns how many
// reservations it expired. It goes on with the other sales after an error
// and returns the first one.
func (w *Sweeper) Sweep(ctx context.Context) (int, error) {
	var first error
	total := 0
	for _, sale := range w.sales.IDs() {
		n, err := w.sweepSale(ctx, sale)
		total += n
		if err != nil && first == nil {
			first = err
		}
	}
	return total, first
}

func (w *Sweeper) sweepSale(ctx context.Context, sale string) (int, error) {
	total := 0
	for range w.cfg.MaxBatches {
		cctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
		ids, err := w.store.Expire(cctx, sale, w.cfg.Now(), w.cfg.Batch)
		cancel()
		if err != nil {
			if w.cfg.OnError != nil {
				w.cfg.OnError(sale, err)
			}
			return total, fmt.Errorf("expire reservations of sale %s: %w", sale, err)
		}
		if len(ids) > 0 && w.cfg.OnExpired != nil {
			w.cfg.OnExpired(sale, len(ids))
		}
		total += len(ids)
		if len(ids) < w.cfg.Batch {
			break
		}
	}
	return total, nil
}

// Close stops the loop and waits for it. Safe twice and on nil.
func (w *Sweeper) Close() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}
