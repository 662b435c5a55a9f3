package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/childproc"
)

// TargetEnv, when set in a process's environment, makes it one target
// server of a bench run instead (ServeTargetFromEnv). The value is the
// target's JSON spec.
const TargetEnv = "FLASHSALE_BENCH_TARGET"

// TargetProfileEnv, when set to a directory, makes every target write a
// CPU profile of its whole life there (target-KIND-PID.pprof).
const TargetProfileEnv = "FLASHSALE_BENCH_TARGET_CPUPROFILE"

// targetSpec says what a target serves. Every HTTP row's target runs in
// a process of its own, as a real server would: the generator then shares
// neither a Go scheduler nor a garbage collector with what it measures.
type targetSpec struct {
	Kind   string `json:"kind"` // bare, seller or counter
	Listen string `json:"listen"`
	// Ready is a file the child creates once it serves.
	Ready string `json:"ready,omitempty"`
	// seller and counter
	Redis string `json:"redis,omitempty"`
	Pool  int    `json:"pool,omitempty"`
	// seller
	Region string `json:"region,omitempty"`
	Secret []byte `json:"secret,omitempty"`
	Weak   bool   `json:"weak,omitempty"`
	// counter
	Key   string `json:"key,omitempty"`
	Total int64  `json:"total,omitempty"`
}

// serveTarget starts the target spec describes in this process and
// returns its base URL and how to stop it.
func serveTarget(ctx context.Context, spec targetSpec, log *slog.Logger) (string, func(), error) {
	switch spec.Kind {
	case "bare":
		t, err := serve(spec.Listen, bareHandler())
		if err != nil {
			return "", nil, err
		}
		return t.URL, func() { _ = t.Close() }, nil
	case "seller":
		rdb := redis.NewClient(&redis.Options{Addr: spec.Redis, PoolSize: spec.Pool})
		srv, url, err := startSeller(ctx, rdb, spec.Listen, spec.Region, spec.Secret, log, spec.Weak)
		if err != nil {
			_ = rdb.Close()
			return "", nil, err
		}
		return url, func() { _ = srv.Close(); _ = rdb.Close() }, nil
	case "counter":
		rdb := redis.NewClient(&redis.Options{Addr: spec.Redis, PoolSize: spec.Pool, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
		// Open the connections now: a new one pays extra round trips
		// (HELLO, CLIENT SETINFO) across the delay.
		var wg sync.WaitGroup
		for range spec.Pool {
			wg.Go(func() { _ = rdb.Ping(ctx).Err() })
		}
		wg.Wait()
		t, err := serve(spec.Listen, counterHandler(rdb, spec.Key, spec.Total))
		if err != nil {
			_ = rdb.Close()
			return "", nil, err
		}
		return t.URL, func() { _ = t.Close(); _ = rdb.Close() }, nil
	}
	return "", nil, fmt.Errorf("bench target: unknown kind %q", spec.Kind)
}

// ServeTargetFromEnv serves the target named by TargetEnv until SIGTERM or
// SIGINT and reports true; without TargetEnv it does nothing and reports
// false. The bench command's main and this package's TestMain call it
// first: a bench run starts its targets by running its own executable.
func ServeTargetFromEnv() (bool, error) {
	raw, ok := os.LookupEnv(TargetEnv)
	if !ok {
		return false, nil
	}
	var spec targetSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return true, fmt.Errorf("%s: %w", TargetEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if dir := os.Getenv(TargetProfileEnv); dir != "" {
		// A diagnosis aid: where a target's CPU goes under a bench run.
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("target-%s-%d.pprof", spec.Kind, os.Getpid())))
		if err != nil {
			return true, fmt.Errorf("%s: %w", TargetProfileEnv, err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return true, fmt.Errorf("%s: %w", TargetProfileEnv, err)
		}
		defer pprof.StopCPUProfile()
	}
	_, closeFn, err := serveTarget(ctx, spec, log)
	if err != nil {
		return true, err
	}
	if err := os.WriteFile(spec.Ready, nil, 0o644); err != nil {
		closeFn()
		return true, fmt.Errorf("bench target: %w", err)
	}
	<-ctx.Done()
	closeFn()
	return true, nil
}

// startTarget runs spec in a child process (this executable, with
// TargetEnv set) on a free port, waits until it serves, and returns its
// URL and how to stop it. Its output goes to a log in dir. A free port
// picked here can be taken before the child binds it: it tries three.
func startTarget(ctx context.Context, spec targetSpec, dir string) (url string, stop func(), err error) {
	for range 3 {
		if url, stop, err = startTargetOnce(ctx, spec, dir); !errors.Is(err, errTargetExited) {
			break
		}
	}
	return url, stop, err
}

// errTargetExited is a target that stopped before it served: most likely
// its port was taken.
var errTargetExited = errors.New("exited before it served")

func startTargetOnce(ctx context.Context, spec targetSpec, dir string) (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("bench target: %w", err)
	}
	port, err := childproc.FreePort()
	if err != nil {
		return "", nil, err
	}
	spec.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	spec.Ready = filepath.Join(dir, fmt.Sprintf("target-%s-%d.ready", spec.Kind, port))
	b, err := json.Marshal(spec)
	if err != nil {
		return "", nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("target-%s-%d.log", spec.Kind, port))
	out, err := os.Create(logPath)
	if err != nil {
		return "", nil, fmt.Errorf("bench target: %w", err)
	}
	defer out.Close() // the child holds its own descriptor
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), TargetEnv+"="+string(b))
	cmd.Stdout, cmd.Stderr = out, out
	// A bench killed outright must not leave its targets serving.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var child childproc.Child
	exited, err := child.Start(cmd)
	if err != nil {
		return "", nil, fmt.Errorf("bench target %s: %w", spec.Kind, err)
	}
	stop := func() { child.Stop(syscall.SIGTERM, 5*time.Second) }
	// The child creates the ready file once it serves (the seller: once
	// its Redis, scripts and durability are checked).
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(spec.Ready); err == nil {
			return "http://" + spec.Listen, stop, nil
		}
		select {
		case <-exited:
			return "", nil, fmt.Errorf("bench target %s %w: %s", spec.Kind, errTargetExited, childproc.Tail(logPath))
		case <-ctx.Done():
			stop()
			return "", nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("bench target " + spec.Kind + " not ready within 15s: " + childproc.Tail(logPath))
		}
	}
}
