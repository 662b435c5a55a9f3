package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad flags are refused before anything starts, naming what is wrong.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-delays", "80"}, "-delays"},
		{[]string{"-quick", "extra"}, "unexpected arguments"},
		{[]string{"-rounds", "1000", "-duration", "1s"}, "rounds"},
		{[]string{"-delays", "5s"}, "delay"},
		{[]string{"-no-such-flag"}, "not defined"},
	} {
		var out, errOut bytes.Buffer
		err := run(tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error()+errOut.String(), tc.want) {
			t.Errorf("run(%q): %v (stderr %q): want an error about %q", tc.args, err, errOut.String(), tc.want)
		}
	}
}
