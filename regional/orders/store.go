package orders

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations
var migrations embed.FS

// ErrBadDSN means Open did not recognise the order store address.
var ErrBadDSN = errors.New("order store DSN must start with postgres://, postgresql://, sqlite:// or file:")

// Order is one order row.
type Order struct {
	Sale, Region, Resv, User string
	State                    State
	CreatedAt, UpdatedAt     time.Time
	ExpiresAt                time.Time // zero if never known
	PaymentID                string
	Req                      string // the buyer's requestId; "" on rows written before it was kept
}

// Store is the SQL order store. Apply writes a batch in one transaction:
// either every event and reject of the batch is recorded, or none is and it
// returns an error. Writes are idempotent upserts that only move a row
// forward (reserved to a terminal state), so replaying any events in any
// order converges to the same rows.
type Store interface {
	Apply(ctx context.Context, b Batch) error
	// Orders lists a sale's rows in one region ("" for every region),
	// ordered by region then reservation id.
	Orders(ctx context.Context, sale, region string) ([]Order, error)
	// Rejects lists the entries of a sale that could not become rows.
	Rejects(ctx context.Context, sale string) ([]Reject, error)
	Ping(ctx context.Context) error
	Close() error
}

// Open connects to the store named by dsn and applies the migrations:
// "postgres://..." or "postgresql://..." for PostgreSQL, "sqlite:///path"
// or "file:path?..." for SQLite.
func Open(ctx context.Context, dsn string) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openSQL(ctx, postgresDialect, dsn)
	case strings.HasPrefix(dsn, "sqlite://"):
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" {
			return nil, fmt.Errorf("%w: %q has no path (want sqlite:///abs/path.db)", ErrBadDSN, dsn)
		}
		return openSQL(ctx, sqliteDialect, "file:"+path)
	case strings.HasPrefix(dsn, "file:"):
		return openSQL(ctx, sqliteDialect, dsn)
	}
	return nil, fmt.Errorf("%w: got %q", ErrBadDSN, redact(dsn))
}

// migration is one embedded .sql file; its version is the number before
// the first underscore of its name.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(dialect string) ([]migration, error) {
	dir := "migrations/" + dialect
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations %s: %w", dir, err)
	}
	var out []migration
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number: %w", e.Name(), err)
		}
		b, err := fs.ReadFile(migrations, dir+"/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// redact hides a password in a DSN before it goes into an error message.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	creds := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(creds, ":"); ok {
		return dsn[:scheme+3] + user + ":***" + dsn[at:]
	}
	return dsn
}
