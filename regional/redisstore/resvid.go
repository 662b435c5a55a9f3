package redisstore

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Reservation ids are ULIDs: 26 characters of Crockford base32 (within the
// id charset [A-Za-z0-9_.:-] and free of braces, so they are safe in a
// {sale:ID} key), unique across regions without coordination (80 random
// bits per millisecond per process), and opaque to buyers: nothing may be
// read into them, not even the time. A number per region would give two
// buyers of two regions the same id, and the order rows of two regions
// could not share a table.

// resvIDs makes the reservation ids of one process. Monotonic entropy keeps
// ids made in the same millisecond distinct and in order without asking
// crypto/rand for each one; it is not safe for concurrent use, hence the
// mutex (held for well under a microsecond: an increment, or one read of
// 10 random bytes per new millisecond).
type resvIDs struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

var reservationIDs = &resvIDs{entropy: ulid.Monotonic(rand.Reader, 0)}

// NewReservationID returns a new reservation id stamped with now.
func NewReservationID(now time.Time) string { return reservationIDs.next(now) }

func (g *resvIDs) next(now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(max(now.UnixMilli(), 0))
	id, err := ulid.New(ms, g.entropy)
	if err != nil {
		// The entropy overflowed: 2^80 ids in one millisecond cannot
		// happen; a clock going back to an earlier millisecond does not
		// overflow. Start a fresh random sequence rather than fail a buyer.
		g.entropy = ulid.Monotonic(rand.Reader, 0)
		id = ulid.MustNew(ms, g.entropy)
	}
	return id.String()
}
