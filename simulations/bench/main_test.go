package bench

import (
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary be a bench target too: Run starts its
// targets by running its own executable (ServeTargetFromEnv).
func TestMain(m *testing.M) {
	if served, err := ServeTargetFromEnv(); served {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench target:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
