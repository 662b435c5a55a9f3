package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckHistory: -check-history passes a saved history a sale of its
// -total can give and rejects one that oversells it, writing porcupine's
// visualization under -results.
func TestCheckHistory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "history.json")
	two := `[{"client":0,"kind":"buy","user":"u1","req":"r1","call":0,"return":10,"result":"reserved","resv":"A"},
{"client":1,"kind":"buy","user":"u2","req":"r2","call":20,"return":30,"result":"reserved","resv":"B"}]`
	if err := os.WriteFile(path, []byte(two), 0o644); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-check-history", path, "-total", "2", "-results", results}, &out); err != nil {
		t.Fatalf("two units of two: %v\n%s", err, out.String())
	}
	out.Reset()
	err := run(context.Background(), []string{"-check-history", path, "-total", "1", "-results", results}, &out)
	if !errors.Is(err, errFailed) || !strings.Contains(out.String(), "Illegal") {
		t.Fatalf("two units of one: %v\n%s", err, out.String())
	}
	if fi, err := os.Stat(filepath.Join(results, "history.json.html")); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization: %v", err)
	}
}
