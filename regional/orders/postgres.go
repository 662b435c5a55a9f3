package orders

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Same merge rules as sqliteUpsert; see there.
const pgUpsert = `
INSERT INTO orders AS o (sale, region, resv, user_id, state, created_at, updated_at, expires_at, payment_id)
VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)
ON CONFLICT (sale, region, resv) DO UPDATE SET
    state      = CASE WHEN o.state = 'reserved' THEN EXCLUDED.state ELSE o.state END,
    user_id    = CASE WHEN o.user_id = '' THEN EXCLUDED.user_id ELSE o.user_id END,
    created_at = LEAST(o.created_at, EXCLUDED.created_at),
    updated_at = GREATEST(o.updated_at, EXCLUDED.updated_at),
    expires_at = GREATEST(o.expires_at, EXCLUDED.expires_at),
    payment_id = CASE WHEN o.payment_id = '' THEN EXCLUDED.payment_id ELSE o.payment_id END`

const pgReject = `
INSERT INTO order_rejects (sale, region, stream_id, resv, user_id, type, reason, fields, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (sale, region, stream_id) DO NOTHING`

// pgMigrationLock serialises migrations of sellers starting together.
const pgMigrationLock = 7_406_191_001

type pgStore struct {
	pool *pgxpool.Pool
}

func openPostgres(ctx context.Context, dsn string) (*pgStore, error) {
	if !strings.Contains(dsn, "connect_timeout") {
		// Without it a dead server can hold a write for the OS TCP timeout.
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "connect_timeout=5"
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres DSN %s: %w", redact(dsn), err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres connect %s: %w", redact(dsn), err)
	}
	s := &pgStore{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *pgStore) migrate(ctx context.Context) error {
	ms, err := loadMigrations("postgres")
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgMigrationLock); err != nil {
		return fmt.Errorf("postgres: migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: create schema_migrations: %w", err)
	}
	for _, m := range ms {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.name, err)
		}
		if n > 0 {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate commit: %w", err)
	}
	return nil
}

func upsertArgs(e Event) []any {
	var expires any
	if e.ExpiresAt > 0 {
		expires = msTime(e.ExpiresAt)
	}
	return []any{e.Sale, e.Region, e.Resv, e.User, string(e.State()), msTime(e.At), expires, e.PaymentID}
}

func rejectArgs(r Reject, now time.Time) []any {
	return []any{r.Sale, r.Region, r.StreamID, r.Resv, r.User, r.Type, r.Reason, r.Fields, now}
}

// Apply pipelines the whole batch in one round trip. A statement error
// aborts a PostgreSQL transaction, so when the per-user index refuses an
// event the batch is redone one savepoint per event.
func (s *pgStore) Apply(ctx context.Context, b Batch) error {
	err := s.applyFast(ctx, b)
	if isPGUniqueViolation(err) {
		return s.applySlow(ctx, b)
	}
	return err
}

func (s *pgStore) applyFast(ctx context.Context, b Batch) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var pb pgx.Batch
	for _, e := range b.Events {
		pb.Queue(pgUpsert, upsertArgs(e)...)
	}
	now := time.Now().UTC()
	for _, r := range b.Rejects {
		pb.Queue(pgReject, rejectArgs(r, now)...)
	}
	if err := tx.SendBatch(ctx, &pb).Close(); err != nil {
		return fmt.Errorf("postgres: write batch of %d: %w", b.Len(), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

func (s *pgStore) applySlow(ctx context.Context, b Batch) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rejects := b.Rejects
	for _, e := range b.Events {
		sp, err := tx.Begin(ctx) // a savepoint
		if err != nil {
			return fmt.Errorf("postgres: savepoint: %w", err)
		}
		_, err = sp.Exec(ctx, pgUpsert, upsertArgs(e)...)
		if isPGUniqueViolation(err) {
			if err := sp.Rollback(ctx); err != nil {
				return fmt.Errorf("postgres: rollback to savepoint: %w", err)
			}
			rejects = append(rejects, userLimitReject(e))
			continue
		}
		if err != nil {
			return fmt.Errorf("postgres: upsert %s/%s/%s: %w", e.Sale, e.Region, e.Resv, err)
		}
		if err := sp.Commit(ctx); err != nil {
			return fmt.Errorf("postgres: release savepoint: %w", err)
		}
	}
	now := time.Now().UTC()
	for _, r := range rejects {
		if _, err := tx.Exec(ctx, pgReject, rejectArgs(r, now)...); err != nil {
			return fmt.Errorf("postgres: reject %s: %w", r.StreamID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

func isPGUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "orders_one_live_per_user"
}

func (s *pgStore) Orders(ctx context.Context, sale, region string) ([]Order, error) {
	rows, err := s.pool.Query(ctx, `
SELECT sale, region, resv, user_id, state, created_at, updated_at, expires_at, payment_id
FROM orders WHERE sale = $1 AND ($2 = '' OR region = $2) ORDER BY region, resv`, sale, region)
	if err != nil {
		return nil, fmt.Errorf("postgres: list orders: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		var o Order
		var state string
		var expires *time.Time
		if err := rows.Scan(&o.Sale, &o.Region, &o.Resv, &o.User, &state, &o.CreatedAt, &o.UpdatedAt, &expires, &o.PaymentID); err != nil {
			return nil, fmt.Errorf("postgres: scan order: %w", err)
		}
		o.State = State(state)
		o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
		if expires != nil {
			o.ExpiresAt = expires.UTC()
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list orders: %w", err)
	}
	return out, nil
}

func (s *pgStore) Rejects(ctx context.Context, sale string) ([]Reject, error) {
	rows, err := s.pool.Query(ctx, `
SELECT sale, region, stream_id, resv, user_id, type, reason, fields
FROM order_rejects WHERE sale = $1 ORDER BY region, stream_id`, sale)
	if err != nil {
		return nil, fmt.Errorf("postgres: list rejects: %w", err)
	}
	defer rows.Close()
	var out []Reject
	for rows.Next() {
		var r Reject
		if err := rows.Scan(&r.Sale, &r.Region, &r.StreamID, &r.Resv, &r.User, &r.Type, &r.Reason, &r.Fields); err != nil {
			return nil, fmt.Errorf("postgres: scan reject: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list rejects: %w", err)
	}
	return out, nil
}

func (s *pgStore) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func (s *pgStore) Close() error {
	if s == nil {
		return nil
	}
	s.pool.Close()
	return nil
}
