package quota_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// forbidden says whether a package may not be among quota's dependencies:
// quota performs no I/O and reads no clock (DESIGN §2). fmt is out too, as
// it brings os and time.
func forbidden(pkg string) bool {
	for _, p := range []string{"net", "os", "time", "database/sql", "go.etcd.io", "github.com/redis", "google.golang.org/grpc"} {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// forbiddenDeps lists the forbidden packages among pkg's dependencies, as
// `go list -deps` reports them.
func forbiddenDeps(t *testing.T, pkg string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, pkg) {
		t.Fatalf("go list -deps %s does not list the package itself: %q", pkg, deps)
	}
	var bad []string
	for _, d := range deps {
		if forbidden(d) {
			bad = append(bad, d)
		}
	}
	return bad
}

func TestPurity(t *testing.T) {
	if bad := forbiddenDeps(t, "flashsale/quota"); len(bad) > 0 {
		t.Fatalf("quota must stay pure, but depends on %v", bad)
	}
}

// TestPurityCheckCatches is the negative control: the same check on a
// package that starts redis-server must find net and os.
func TestPurityCheckCatches(t *testing.T) {
	bad := forbiddenDeps(t, "flashsale/internal/redistest")
	if !slices.Contains(bad, "net") || !slices.Contains(bad, "os") {
		t.Fatalf("the purity check missed net and os in redistest: found only %v", bad)
	}
	for _, p := range []string{"net/http", "os/exec", "time", "go.etcd.io/etcd/client/v3", "github.com/redis/go-redis/v9", "google.golang.org/grpc", "database/sql"} {
		if !forbidden(p) {
			t.Errorf("%s should be forbidden", p)
		}
	}
	for _, p := range []string{"flashsale/quota", "strconv", "math", "sort", "errors", "network"} {
		if forbidden(p) {
			t.Errorf("%s should be allowed", p)
		}
	}
}
