// Package pgproc runs a PostgreSQL server as a child process on loopback:
// initdb into a fresh directory with trust auth, postgres on a free port
// with its socket in that directory, one database. The benchmarks use it
// directly (fsync on), the tests through internal/pgtest (fsync off).
//
// PostgreSQL refuses to run as root, so as root the server runs as the
// unprivileged `postgres` user the Debian package creates.
package pgproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"flashsale/internal/childproc"
)

// InstallHint is the command that installs the PostgreSQL binaries.
const InstallHint = "apt-get update && apt-get install -y postgresql (or run scripts/deps.sh as root)"

// Options say how to run the server.
type Options struct {
	Database string // created at start; required
	// NoFsync turns fsync off: data then survives a process crash (the OS
	// page cache has it) but not a machine crash. For tests only; a
	// benchmark must pay for durability as Redis does with fsync always.
	NoFsync bool
}

// Proc is one postgres child process.
type Proc struct {
	DSN  string // postgres://postgres@127.0.0.1:port/<Database>?sslmode=disable
	Port int
	Dir  string // holds data/, the socket and postgres.log

	opts Options
	bin  string
	cred *syscall.Credential

	child childproc.Child
}

// Start runs initdb and postgres and creates the database. On error
// nothing is left running or on disk.
func Start(ctx context.Context, opts Options) (p *Proc, err error) {
	if opts.Database == "" {
		return nil, errors.New("pgproc: Options.Database is required")
	}
	bin, err := FindBin()
	if err != nil {
		return nil, err
	}
	p = &Proc{opts: opts, bin: bin}
	defer func() {
		if err != nil {
			_ = p.Close()
		}
	}()
	// Our own directory under the system temp dir: the postgres user must be
	// able to reach it (a test's t.TempDir parents are private to root).
	if p.Dir, err = os.MkdirTemp("", "pgproc-"); err != nil {
		return p, fmt.Errorf("pgproc: temp dir: %w", err)
	}
	if os.Geteuid() == 0 {
		if p.cred, err = postgresUser(); err != nil {
			return p, err
		}
		if err := os.Chown(p.Dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return p, fmt.Errorf("pgproc: chown %s: %w", p.Dir, err)
		}
	}
	if err := os.Chmod(p.Dir, 0o700); err != nil {
		return p, fmt.Errorf("pgproc: chmod %s: %w", p.Dir, err)
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(p.Dir, "data"),
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	initdb.Dir = p.Dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return p, fmt.Errorf("pgproc: initdb: %w\n%s", err, out)
	}
	if p.Port, err = childproc.FreePort(); err != nil {
		return p, err
	}
	p.DSN = p.DatabaseDSN(opts.Database)
	if err := p.start(ctx); err != nil {
		return p, err
	}
	return p, p.CreateDatabase(ctx, opts.Database)
}

// DatabaseDSN is the DSN of database name on this server.
func (p *Proc) DatabaseDSN(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, name)
}

// CreateDatabase creates an empty database.
func (p *Proc) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.DatabaseDSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgproc: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("pgproc: create database %s: %w", name, err)
	}
	return nil
}

func (p *Proc) start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(p.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgproc: log file: %w", err)
	}
	defer logf.Close()
	args := []string{"-D", filepath.Join(p.Dir, "data"), "-p", strconv.Itoa(p.Port), "-h", "127.0.0.1", "-k", p.Dir,
		"-c", "max_connections=100", "-c", "shared_buffers=32MB"}
	if p.opts.NoFsync {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	done, err := p.child.Start(cmd)
	if err != nil {
		return fmt.Errorf("pgproc: start postgres: %w", err)
	}
	if err := p.waitReady(ctx, done); err != nil {
		p.signal(syscall.SIGQUIT)
		return fmt.Errorf("pgproc: postgres on port %d: %w\nlog:\n%s", p.Port, err, childproc.Tail(filepath.Join(p.Dir, "postgres.log")))
	}
	return nil
}

// signal sends sig to the postmaster and waits for it to exit.
func (p *Proc) signal(sig syscall.Signal) { p.child.Stop(sig, 10*time.Second) }

// Kill stops the server as a crash would ("immediate" shutdown: no
// checkpoint, the next start runs crash recovery). Open connections break.
func (p *Proc) Kill() { p.signal(syscall.SIGQUIT) }

// Restart starts the server again on the same port and data directory
// (after Kill, or kills it first).
func (p *Proc) Restart(ctx context.Context) error {
	p.Kill()
	return p.start(ctx)
}

// Close stops the server (fast shutdown) and removes its directory. Safe
// to call twice or on nil.
func (p *Proc) Close() error {
	if p == nil {
		return nil
	}
	p.signal(syscall.SIGINT)
	if p.Dir != "" {
		_ = os.RemoveAll(p.Dir)
		p.Dir = ""
	}
	return nil
}

// FindBin returns the directory holding initdb and postgres, or an error
// with the command that installs them.
func FindBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		// The longest-then-greatest name, so 16 beats 9.6.
		best := matches[0]
		for _, m := range matches[1:] {
			if len(m) > len(best) || (len(m) == len(best) && m > best) {
				best = m
			}
		}
		return filepath.Dir(best), nil
	}
	return "", errors.New("pgproc: PostgreSQL binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install them with `" + InstallHint + "`")
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgproc: running as root, and postgres refuses root; the `postgres` user is missing (%w): install the server with `%s`", err, InstallHint)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (p *Proc) waitReady(ctx context.Context, exited <-chan struct{}) error {
	dsn := p.DatabaseDSN("postgres") + "&connect_timeout=1"
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		if err == nil {
			_ = conn.Close(cctx)
			ccancel()
			return nil
		}
		ccancel()
		select {
		case <-exited:
			return errors.New("postgres exited at start")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
