package quota

import (
	"errors"
	"testing"
)

func TestErrorf(t *testing.T) {
	err := errorf("grant %d to %s at %g: %w (%v) 100%%", int64(-3), "eu", 1.5, ErrNegative, nil)
	if want := "grant -3 to eu at 1.5: negative amount (<nil>) 100%"; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if !errors.Is(err, ErrNegative) {
		t.Fatal("errorf does not wrap its %w argument")
	}
	if err := errorf("region %s: %d", "us"); err.Error() != "region us: %!d(MISSING)" || errors.Unwrap(err) != nil {
		t.Fatalf("got %q, unwrap %v", err, errors.Unwrap(err))
	}
}
