package orders

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// sqlStore is the order store on database/sql, for every dialect.
type sqlStore struct {
	db *sql.DB
	d  dialect
	// Statements, rebound to the dialect.
	upsert, reject, orders, rejects string
}

// upsertRows is the most rows one upsert statement writes (10 parameters a
// row, under both databases' parameter limits).
const upsertRows = 500

func openSQL(ctx context.Context, d dialect, dsn string) (*sqlStore, error) {
	dsn, err := d.dsn(dsn)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open(d.driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", d.name, redact(dsn), err)
	}
	db.SetMaxOpenConns(d.maxConns)
	db.SetMaxIdleConns(d.maxConns)
	s := &sqlStore{db: db, d: d}
	// The upsert moves a row forward only and merges times commutatively
	// (first non-empty user, earliest created, latest updated and expiry),
	// so events applied in any order, any number of times, give the same row.
	// s.upsert is the statement's tail, after its VALUES rows.
	s.upsert = fmt.Sprintf(`
ON CONFLICT (sale, region, resv) DO UPDATE SET
    state      = CASE WHEN orders.state = 'reserved' THEN excluded.state ELSE orders.state END,
    user_id    = CASE WHEN orders.user_id = '' THEN excluded.user_id ELSE orders.user_id END,
    created_at = %[1]s(orders.created_at, excluded.created_at),
    updated_at = %[2]s(orders.updated_at, excluded.updated_at),
    expires_at = %[2]s(orders.expires_at, excluded.expires_at),
    payment_id = CASE WHEN orders.payment_id = '' THEN excluded.payment_id ELSE orders.payment_id END,
    req_id     = CASE WHEN orders.req_id = '' THEN excluded.req_id ELSE orders.req_id END`,
		d.least, d.greatest)
	s.reject = d.rebind(`
INSERT INTO order_rejects (sale, region, stream_id, resv, user_id, type, reason, fields, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sale, region, stream_id) DO NOTHING`)
	s.orders = d.rebind(fmt.Sprintf(`
SELECT sale, region, resv, user_id, state, %s, %s, %s, payment_id, req_id
FROM orders WHERE sale = ? AND (? = '' OR region = ?) ORDER BY region, resv`,
		d.ms("created_at"), d.ms("updated_at"), d.ms("expires_at")))
	s.rejects = d.rebind(`
SELECT sale, region, stream_id, resv, user_id, type, reason, fields
FROM order_rejects WHERE sale = ? ORDER BY region, stream_id`)
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the embedded migrations not applied yet, all in one
// transaction (under the dialect's lock, if it has one).
func (s *sqlStore) migrate(ctx context.Context) (err error) {
	ms, err := loadMigrations(s.d.name)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: migrate: %w", s.d.name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.d.lock != "" {
		if _, err := tx.ExecContext(ctx, s.d.lock); err != nil {
			return fmt.Errorf("%s: migration lock: %w", s.d.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.d.schemaMigrations); err != nil {
		return fmt.Errorf("%s: create schema_migrations: %w", s.d.name, err)
	}
	for _, m := range ms {
		var n int
		if err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT count(*) FROM schema_migrations WHERE version = ?`), m.version).Scan(&n); err != nil {
			return fmt.Errorf("%s: migration %s: %w", s.d.name, m.name, err)
		}
		if n > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("%s: migration %s: %w", s.d.name, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
			m.version, m.name, s.d.at(time.Now().UnixMilli())); err != nil {
			return fmt.Errorf("%s: migration %s: %w", s.d.name, m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: migrate commit: %w", s.d.name, err)
	}
	return nil
}

// Apply writes the batch in one transaction.
func (s *sqlStore) Apply(ctx context.Context, b Batch) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", s.d.name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := s.upsertEvents(ctx, tx, b.Events); err != nil {
		return err
	}
	if len(b.Rejects) > 0 {
		rej, err := tx.PrepareContext(ctx, s.reject)
		if err != nil {
			return fmt.Errorf("%s: prepare reject: %w", s.d.name, err)
		}
		defer rej.Close()
		now := s.d.at(time.Now().UnixMilli())
		for _, r := range b.Rejects {
			if _, err := rej.ExecContext(ctx, r.Sale, r.Region, r.StreamID, r.Resv, r.User, r.Type, r.Reason, r.Fields, now); err != nil {
				return fmt.Errorf("%s: reject %s: %w", s.d.name, r.StreamID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", s.d.name, err)
	}
	return nil
}

// upsertEvents writes events with multi-row upserts, one round trip per
// statement rather than per event. PostgreSQL refuses a statement that
// updates one row twice, so a reservation's second event in the batch goes
// into a later statement (the merge is commutative: any split and order
// gives the same rows).
func (s *sqlStore) upsertEvents(ctx context.Context, tx *sql.Tx, events []Event) error {
	type key struct{ sale, region, resv string }
	seen := make(map[key]int, len(events))
	var rounds [][]Event
	for _, e := range events {
		k := key{e.Sale, e.Region, e.Resv}
		r := seen[k]
		seen[k] = r + 1
		if r == len(rounds) {
			rounds = append(rounds, nil)
		}
		rounds[r] = append(rounds[r], e)
	}
	var q strings.Builder
	args := make([]any, 0, 10*min(len(events), upsertRows))
	for _, round := range rounds {
		for len(round) > 0 {
			chunk := round[:min(len(round), upsertRows)]
			round = round[len(chunk):]
			q.Reset()
			args = args[:0]
			q.WriteString("INSERT INTO orders (sale, region, resv, user_id, state, created_at, updated_at, expires_at, payment_id, req_id) VALUES ")
			for i, e := range chunk {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
				args = append(args, e.Sale, e.Region, e.Resv, e.User, string(e.State()),
					s.d.at(e.At), s.d.at(e.At), s.d.expires(e.ExpiresAt), e.PaymentID, e.Req)
			}
			q.WriteString(s.upsert)
			if _, err := tx.ExecContext(ctx, s.d.rebind(q.String()), args...); err != nil {
				e := chunk[0]
				return fmt.Errorf("%s: upsert %d events from %s/%s/%s: %w", s.d.name, len(chunk), e.Sale, e.Region, e.Resv, err)
			}
		}
	}
	return nil
}

func (s *sqlStore) Orders(ctx context.Context, sale, region string) ([]Order, error) {
	rows, err := s.db.QueryContext(ctx, s.orders, sale, region, region)
	if err != nil {
		return nil, fmt.Errorf("%s: list orders: %w", s.d.name, err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		var o Order
		var created, updated, expires int64
		if err := rows.Scan(&o.Sale, &o.Region, &o.Resv, &o.User, &o.State, &created, &updated, &expires, &o.PaymentID, &o.Req); err != nil {
			return nil, fmt.Errorf("%s: scan order: %w", s.d.name, err)
		}
		o.CreatedAt, o.UpdatedAt = msTime(created), msTime(updated)
		if expires > 0 {
			o.ExpiresAt = msTime(expires)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: list orders: %w", s.d.name, err)
	}
	return out, nil
}

func (s *sqlStore) Rejects(ctx context.Context, sale string) ([]Reject, error) {
	rows, err := s.db.QueryContext(ctx, s.rejects, sale)
	if err != nil {
		return nil, fmt.Errorf("%s: list rejects: %w", s.d.name, err)
	}
	defer rows.Close()
	var out []Reject
	for rows.Next() {
		var r Reject
		if err := rows.Scan(&r.Sale, &r.Region, &r.StreamID, &r.Resv, &r.User, &r.Type, &r.Reason, &r.Fields); err != nil {
			return nil, fmt.Errorf("%s: scan reject: %w", s.d.name, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: list rejects: %w", s.d.name, err)
	}
	return out, nil
}

func (s *sqlStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *sqlStore) Close() error {
	if s == nil {
		return nil
	}
	return s.db.Close()
}
