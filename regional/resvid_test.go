package regional

import (
	"context"
	"errors"
	"flashsale/quota"
	"net/http"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// TestReservationIDsAcrossRegions: two regions, each its own seller and
// Redis, hand out ULIDs that never collide (even for the same requestId);
// an id reserved in one region is unknown in the other (404
// unknown_reservation, nothing changed), while a user of the other home
// region is still redirected home (307) before any lookup.
func TestReservationIDsAcrossRegions(t *testing.T) {
	eu := newEnv(t, nil) // region eu, knows us
	us := newEnv(t, func(c *Config) {
		c.Region = "us"
		c.Regions = map[string]string{"eu": "https://eu.shop.example"}
	})
	tok := func(e *testEnv, user, home string) string {
		return token(t, testSecret, user, home, e.clock.Now().Add(time.Hour))
	}
	buy := func(e *testEnv, user, home, req string) ReservationJSON {
		t.Helper()
		a := e.do("POST", "/v1/flash-sale/buy", tok(e, user, home), map[string]string{"itemId": testSale, "requestId": req})
		expect(t, a, http.StatusCreated, "")
		r := a.resv(t)
		if _, err := ulid.ParseStrict(r.ReservationID); err != nil {
			t.Fatalf("reservation id %q is not a ULID: %v", r.ReservationID, err)
		}
		return r
	}
	// The same requestId in both regions: two reservations, two ids.
	a := buy(eu, "alice", "eu", "req-1")
	b := buy(us, "bob", "us", "req-1")
	if a.ReservationID == b.ReservationID {
		t.Fatalf("two regions gave the same reservation id %s", a.ReservationID)
	}

	finish := func(e *testEnv, op, user, home, id string) answer {
		return e.do("POST", "/v1/flash-sale/reservations/"+id+"/"+op, tok(e, user, home), map[string]string{"itemId": testSale})
	}
	before, keys := us.counters(), us.dbsize()
	for _, op := range []string{"confirm", "cancel"} {
		// A buyer of us holding eu's id (a forged or misrouted link): unknown here.
		expect(t, finish(us, op, "bob", "us", a.ReservationID), http.StatusNotFound, CodeUnknownResv)
		// Its owner, whose home is eu, is sent home before any lookup.
		r := finish(us, op, "alice", "eu", a.ReservationID)
		expect(t, r, http.StatusTemporaryRedirect, CodeWrongRegion)
		if want := "https://eu.shop.example/v1/flash-sale/reservations/" + a.ReservationID + "/" + op; r.header.Get("Location") != want {
			t.Fatalf("Location %q, want %q", r.header.Get("Location"), want)
		}
	}
	if us.counters() != before || us.dbsize() != keys {
		t.Fatal("a confirm or cancel with another region's id changed Redis")
	}
	if _, err := us.srv.Store().Reservation(context.Background(), testSale, a.ReservationID); !errors.Is(err, quota.ErrNoSuchResv) {
		t.Fatalf("eu's reservation read in us: %v, want ErrNoSuchResv", err)
	}
	// At home the same id works.
	expect(t, finish(eu, "confirm", "alice", "eu", a.ReservationID), http.StatusOK, "")
	expect(t, finish(us, "cancel", "bob", "us", b.ReservationID), http.StatusOK, "")
}
