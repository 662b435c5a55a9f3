package orders

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// dialect is what really differs between the SQL databases the store runs
// on; everything else is sqlStore. Statements are written with ? and
// rebound to the dialect's placeholders.
type dialect struct {
	name     string // migrations/<name>, and the prefix of error messages
	driver   string // database/sql driver name
	maxConns int
	// dsn turns the address Open was given into the driver's, adding the
	// settings the store relies on.
	dsn func(string) (string, error)
	// numbered placeholders ($1, $2, ...) instead of ?.
	numbered bool
	// least and greatest are the two-argument min and max functions.
	least, greatest string
	// at is how a time in unix milliseconds is stored; expires the same for
	// expires_at, where 0 means never known.
	at, expires func(ms int64) any
	// ms reads a time column back as unix milliseconds (0 for NULL).
	ms func(col string) string
	// schemaMigrations creates the table of applied migrations.
	schemaMigrations string
	// lock, if not empty, runs first in the migration transaction so that
	// sellers starting together migrate one after the other.
	lock string
}

// pgMigrationLock is the advisory lock key that serialises migrations.
const pgMigrationLock = 7_406_191_001

var sqliteDialect = dialect{
	name: "sqlite", driver: "sqlite",
	// SQLite has one writer; one connection serialises writers in Go instead
	// of failing them with SQLITE_BUSY.
	maxConns: 1,
	dsn:      sqliteDSN,
	least:    "MIN", greatest: "MAX",
	// SQLite has no timestamp type: times are unix milliseconds.
	at:               func(ms int64) any { return ms },
	expires:          func(ms int64) any { return ms },
	ms:               func(col string) string { return col },
	schemaMigrations: `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
}

var postgresDialect = dialect{
	name: "postgres", driver: "pgx",
	maxConns: 8,
	dsn:      postgresDSN,
	numbered: true,
	least:    "LEAST", greatest: "GREATEST",
	at: func(ms int64) any { return msTime(ms) },
	expires: func(ms int64) any {
		if ms <= 0 {
			return nil
		}
		return msTime(ms)
	},
	ms: func(col string) string {
		return "COALESCE(round(extract(epoch FROM " + col + ") * 1000)::bigint, 0)"
	},
	schemaMigrations: `CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
	lock:             `SELECT pg_advisory_xact_lock(` + strconv.Itoa(pgMigrationLock) + `)`,
}

// rebind rewrites the ? placeholders of q for d.
func (d dialect) rebind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
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

// postgresDSN adds a connect timeout unless the caller set one: without it
// a dead server can hold a write for the OS TCP timeout.
func postgresDSN(dsn string) (string, error) {
	if strings.Contains(dsn, "connect_timeout") {
		return dsn, nil
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "connect_timeout=5", nil
}
