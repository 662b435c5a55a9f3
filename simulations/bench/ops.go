package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"flashsale/quota"
	"flashsale/regional/redisstore"
	"flashsale/simulations/loadgen"
)

// Direct ops skip HTTP: they measure a store's cost per purchase, driven by
// the same generator as the HTTP targets.

// incrOp is the floor of any Redis counter: one INCR per attempt.
func incrOp(rdb redis.UniversalClient, key string) loadgen.Op {
	return loadgen.OpFunc(func(ctx context.Context, a loadgen.Attempt) loadgen.Result {
		if err := rdb.Incr(ctx, key).Err(); err != nil {
			return loadgen.Result{Outcome: loadgen.OutcomeError, Err: err}
		}
		return loadgen.Result{Outcome: loadgen.OutcomeReserved, Reserved: true}
	})
}

// reserver is redisstore.Store or redisstore.Batcher.
type reserver interface {
	Reserve(ctx context.Context, sale string, r redisstore.ReserveRequest) (redisstore.ReserveResult, error)
}

// reserveOp runs the seller's reserve script for each attempt, through the
// store (one EVALSHA each) or the batcher.
func reserveOp(r reserver, sale string) loadgen.Op {
	return loadgen.OpFunc(func(ctx context.Context, a loadgen.Attempt) loadgen.Result {
		res, err := r.Reserve(ctx, sale, redisstore.ReserveRequest{
			User: a.User.ID, RequestID: a.RequestID, Now: time.Now(), TTL: time.Hour, PerUserLimit: 1,
		})
		if err != nil {
			return loadgen.Result{Outcome: loadgen.OutcomeError, Err: err}
		}
		return loadgen.Result{Outcome: res.Outcome.String(), Reserved: res.Outcome == quota.Reserved}
	})
}

// pgHotRow is the classic design: one row per product, locked and
// decremented by every purchase, with the order row in the same
// transaction so that it is as durable as the Redis reservation.
type pgHotRow struct {
	pool *pgxpool.Pool
}

func newPGHotRow(ctx context.Context, dsn string, conns int, stock int64) (*pgHotRow, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	cfg.MaxConns = int32(conns)
	cfg.MinConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS stock (item text PRIMARY KEY, remaining bigint NOT NULL CHECK (remaining >= 0))`,
		`CREATE TABLE IF NOT EXISTS orders (request_id text PRIMARY KEY, item text NOT NULL, user_id text NOT NULL, UNIQUE (item, user_id))`,
		`INSERT INTO stock VALUES ('hot', ` + strconv.FormatInt(stock, 10) + `) ON CONFLICT (item) DO UPDATE SET remaining = EXCLUDED.remaining`,
	} {
		if _, err = pool.Exec(ctx, q); err != nil {
			break
		}
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres schema: %w", err)
	}
	return &pgHotRow{pool: pool}, nil
}

func (p *pgHotRow) Close() {
	if p != nil {
		p.pool.Close()
	}
}

var errSoldOut = errors.New("sold out")

func (p *pgHotRow) Do(ctx context.Context, a loadgen.Attempt) loadgen.Result {
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var left int64
		if err := tx.QueryRow(ctx, `SELECT remaining FROM stock WHERE item = 'hot' FOR UPDATE`).Scan(&left); err != nil {
			return err
		}
		if left <= 0 {
			return errSoldOut
		}
		if _, err := tx.Exec(ctx, `UPDATE stock SET remaining = remaining - 1 WHERE item = 'hot'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO orders VALUES ($1, 'hot', $2)`, a.RequestID, a.User.ID)
		return err
	})
	switch {
	case errors.Is(err, errSoldOut):
		return loadgen.Result{Outcome: loadgen.OutcomeSoldOut}
	case err != nil:
		return loadgen.Result{Outcome: loadgen.OutcomeError, Err: err}
	}
	return loadgen.Result{Outcome: loadgen.OutcomeReserved, Reserved: true}
}
