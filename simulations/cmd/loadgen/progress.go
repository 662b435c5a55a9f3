package main

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"
)

// startBar redraws one progress line on w every 200 ms until the returned
// stop is called: attempts done against the bound, and time against the
// run's length (whichever ends the run first).
func startBar(w io.Writer, done *atomic.Int64, maxAttempts int, length time.Duration) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	draw := func() {
		n := done.Load()
		f := max(float64(n)/float64(maxAttempts), float64(time.Since(start))/float64(length))
		f = min(f, 1)
		const width = 30
		bar := strings.Repeat("=", int(f*width)) + strings.Repeat(" ", width-int(f*width))
		fmt.Fprintf(w, "\r[%s] %3.0f%% %d attempts, %v", bar, f*100, n, time.Since(start).Round(time.Second))
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				draw()
				fmt.Fprintln(w)
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}
