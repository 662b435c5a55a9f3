package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The upsert moves a row forward only and merges times commutatively (first
// non-empty user, earliest created, latest updated and expiry), so events
// applied in any order, any number of times, give the same row.
const sqliteUpsert = `
INSERT INTO orders (sale, region, resv, user_id, state, created_at, updated_at, expires_at, payment_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sale, region, resv) DO UPDATE SET
    state      = CASE WHEN orders.state = 'reserved' THEN excluded.state ELSE orders.state END,
    user_id    = CASE WHEN orders.user_id = '' THEN excluded.user_id ELSE orders.user_id END,
    created_at = MIN(orders.created_at, excluded.created_at),
    updated_at = MAX(orders.updated_at, excluded.updated_at),
    expires_at = MAX(orders.expires_at, excluded.expires_at),
    payment_id = CASE WHEN orders.payment_id = '' THEN excluded.payment_id ELSE orders.payment_id END`

const sqliteReject = `
INSERT INTO order_rejects (sale, region, stream_id, resv, user_id, type, reason, fields, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sale, region, stream_id) DO NOTHING`

type sqliteStore struct {
	db *sql.DB
}

func openSQLite(ctx context.Context, dsn string) (*sqliteStore, error) {
	dsn, err := sqliteDSN(dsn)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	// SQLite has one writer; one connection serialises writers in Go instead
	// of failing them with SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	s := &sqliteStore{db: db}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// sqliteDSN adds the pragmas the store relies on unless the caller set them:
// WAL, a busy timeout, and synchronous=FULL because a stream entry is
// acknowledged as soon as its commit returns.
func sqliteDSN(dsn string) (string, error) {
	path, query, _ := strings.Cut(dsn, "?")
	if strings.TrimPrefix(path, "file:") == "" {
		return "", fmt.Errorf("%w: %q has no path", ErrBadDSN, dsn)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("sqlite DSN %q: %w", dsn, err)
	}
	have := strings.Join(q["_pragma"], ",")
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(FULL)"} {
		name, _, _ := strings.Cut(p, "(")
		if !strings.Contains(have, name) {
			q.Add("_pragma", p)
		}
	}
	return path + "?" + q.Encode(), nil
}

func (s *sqliteStore) migrate(ctx context.Context) error {
	ms, err := loadMigrations("sqlite")
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: create schema_migrations: %w", err)
	}
	for _, m := range ms {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
		if n > 0 {
			_ = tx.Rollback()
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, ?)`, m.version, m.name, time.Now().UnixMilli()); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
	}
	return nil
}

func (s *sqliteStore) Apply(ctx context.Context, b Batch) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	up, err := tx.PrepareContext(ctx, sqliteUpsert)
	if err != nil {
		return fmt.Errorf("sqlite: prepare upsert: %w", err)
	}
	defer up.Close()
	now := time.Now().UnixMilli()
	rejects := b.Rejects
	for _, e := range b.Events {
		_, err := up.ExecContext(ctx, e.Sale, e.Region, e.Resv, e.User, string(e.State()), e.At, e.At, e.ExpiresAt, e.PaymentID)
		if isSQLiteUniqueViolation(err) {
			// SQLite rolls back only the failing statement, so the batch
			// goes on with the entry recorded as a reject.
			rejects = append(rejects, userLimitReject(e))
			continue
		}
		if err != nil {
			return fmt.Errorf("sqlite: upsert %s/%s/%s: %w", e.Sale, e.Region, e.Resv, err)
		}
	}
	for _, r := range rejects {
		if _, err := tx.ExecContext(ctx, sqliteReject, r.Sale, r.Region, r.StreamID, r.Resv, r.User, r.Type, r.Reason, r.Fields, now); err != nil {
			return fmt.Errorf("sqlite: reject %s: %w", r.StreamID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

func isSQLiteUniqueViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

func userLimitReject(e Event) Reject {
	return Reject{
		Sale: e.Sale, Region: e.Region, StreamID: e.StreamID, Resv: e.Resv, User: e.User, Type: e.Type,
		Reason: "per-user limit: the user already holds a live order in this sale",
		Fields: rawJSON(e.Fields()),
	}
}

func (s *sqliteStore) Orders(ctx context.Context, sale, region string) ([]Order, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT sale, region, resv, user_id, state, created_at, updated_at, expires_at, payment_id
FROM orders WHERE sale = ? AND (? = '' OR region = ?) ORDER BY region, resv`, sale, region, region)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list orders: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		var o Order
		var created, updated, expires int64
		if err := rows.Scan(&o.Sale, &o.Region, &o.Resv, &o.User, &o.State, &created, &updated, &expires, &o.PaymentID); err != nil {
			return nil, fmt.Errorf("sqlite: scan order: %w", err)
		}
		o.CreatedAt, o.UpdatedAt = msTime(created), msTime(updated)
		if expires > 0 {
			o.ExpiresAt = msTime(expires)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list orders: %w", err)
	}
	return out, nil
}

func (s *sqliteStore) Rejects(ctx context.Context, sale string) ([]Reject, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT sale, region, stream_id, resv, user_id, type, reason, fields
FROM order_rejects WHERE sale = ? ORDER BY region, stream_id`, sale)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list rejects: %w", err)
	}
	defer rows.Close()
	var out []Reject
	for rows.Next() {
		var r Reject
		if err := rows.Scan(&r.Sale, &r.Region, &r.StreamID, &r.Resv, &r.User, &r.Type, &r.Reason, &r.Fields); err != nil {
			return nil, fmt.Errorf("sqlite: scan reject: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list rejects: %w", err)
	}
	return out, nil
}

func (s *sqliteStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *sqliteStore) Close() error {
	if s == nil {
		return nil
	}
	return s.db.Close()
}
