package chaos

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// h builds a history from ops given as (call, return) in order.
func h(ops ...Op) []Op { return ops }

func buy(client int, user, req string, call, ret int64, res Result, resv string) Op {
	return Op{Client: client, Kind: Buy, User: user, Req: req, Call: call, Return: ret, Result: res, Resv: resv}
}

func fin(client int, kind Kind, user, resv string, call, ret int64, res Result) Op {
	return Op{Client: client, Kind: kind, User: user, Resv: resv, Call: call, Return: ret, Result: res}
}

func check(t *testing.T, ops []Op, total, limit int64) HistoryCheck {
	t.Helper()
	hc, err := CheckHistory(ops, total, limit, 10*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// TestModelAcceptsCorrectHistory: a history a correct sale can give, with
// concurrency, refusals that change nothing, retries with the same
// requestId, a lost answer resolved by its retry, cancel returning a unit
// and a sold-out answer once every unit is paid for.
func TestModelAcceptsCorrectHistory(t *testing.T) {
	ops := h(
		buy(0, "u1", "r1", 0, 10, Reserved, "A"),
		buy(1, "u2", "r2", 5, 15, Refused, ""), // quota_pending: nothing done
		buy(1, "u2", "r2", 20, 30, Unknown, ""),
		buy(1, "u2", "r2", 40, 50, Reserved, "B"), // the lost try had reserved B
		buy(2, "u3", "r3", 25, 35, Reserved, "C"), // concurrent with the lost try
		fin(0, Cancel, "u1", "A", 60, 70, OK),
		fin(0, Cancel, "u1", "A", 71, 72, OK), // idempotent
		buy(0, "u1", "r4", 80, 90, Reserved, "D"),
		buy(0, "u1", "r5", 91, 95, AlreadyBought, ""),
		buy(0, "u1", "r4", 96, 97, Reserved, "D"), // a repeated requestId
		fin(0, Confirm, "u1", "D", 100, 110, OK),
		fin(1, Confirm, "u2", "B", 100, 110, OK),
		fin(2, Confirm, "u3", "C", 100, 110, Unknown),
		fin(2, Cancel, "u3", "C", 120, 130, NotActive), // the unknown confirm had confirmed it
		buy(3, "u4", "r6", 140, 150, SoldOut, ""),
	)
	if hc := check(t, ops, 3, 1); hc.Result != porcupine.Ok {
		t.Fatalf("a correct history was judged %s", hc.Result)
	}
}

// TestModelRejectsOversell: two users each told "reserved" for a stock of
// one, with no cancel between: one unit oversold.
func TestModelRejectsOversell(t *testing.T) {
	ops := h(
		buy(0, "u1", "r1", 0, 10, Reserved, "A"),
		buy(1, "u2", "r2", 20, 30, Reserved, "B"),
	)
	if hc := check(t, ops, 1, 1); hc.Result != porcupine.Illegal {
		t.Fatalf("an oversold unit was judged %s", hc.Result)
	}
	// The same two buys with a stock of two are fine: the control fails
	// for the oversell, not for the shape of the history.
	if hc := check(t, ops, 2, 1); hc.Result != porcupine.Ok {
		t.Fatalf("the same history with stock 2 was judged %s", hc.Result)
	}
}

// TestModelRejectsLostReservation: a buyer told "reserved" whose confirm
// later finds no such reservation: an acknowledged reservation was lost.
// So is one whose retry with the same requestId gets a different one.
func TestModelRejectsLostReservation(t *testing.T) {
	lost := h(
		buy(0, "u1", "r1", 0, 10, Reserved, "A"),
		fin(0, Confirm, "u1", "A", 20, 30, NoSuchResv),
	)
	if hc := check(t, lost, 5, 1); hc.Result != porcupine.Illegal {
		t.Fatalf("a lost acknowledged reservation was judged %s", hc.Result)
	}
	reissued := h(
		buy(0, "u1", "r1", 0, 10, Reserved, "A"),
		buy(0, "u1", "r1", 20, 30, Reserved, "B"),
	)
	if hc := check(t, reissued, 5, 1); hc.Result != porcupine.Illegal {
		t.Fatalf("a requestId answered with two reservations was judged %s", hc.Result)
	}
}

// TestModelRejectsSecondUnitPerUser: a user who holds the limit is sold a
// second unit under a new requestId (what a Redis that lost its per-user
// hash does).
func TestModelRejectsSecondUnitPerUser(t *testing.T) {
	ops := h(
		buy(0, "u1", "r1", 0, 10, Reserved, "A"),
		buy(0, "u1", "r2", 20, 30, Reserved, "B"),
	)
	if hc := check(t, ops, 5, 1); hc.Result != porcupine.Illegal {
		t.Fatalf("a second unit for one user was judged %s", hc.Result)
	}
	if hc := check(t, ops, 5, 2); hc.Result != porcupine.Ok {
		t.Fatalf("the same with a limit of 2 was judged %s", hc.Result)
	}
}

// TestModelUnknownIsEitherOutcome: a lost answer may have reserved the
// last unit (then a later buyer is refused) or not (then a later buyer
// gets it); an answer that cannot follow from either is rejected.
func TestModelUnknownIsEitherOutcome(t *testing.T) {
	took := h(
		buy(0, "u1", "r1", 0, 10, Unknown, ""),
		buy(1, "u2", "r2", 20, 30, Refused, ""),
		fin(0, Cancel, "u1", "A", 40, 50, Refused),
	)
	if hc := check(t, took, 1, 1); hc.Result != porcupine.Ok {
		t.Fatalf("unknown then refused: %s", hc.Result)
	}
	didNot := h(
		buy(0, "u1", "r1", 0, 10, Unknown, ""),
		buy(1, "u2", "r2", 20, 30, Reserved, "B"),
	)
	if hc := check(t, didNot, 1, 1); hc.Result != porcupine.Ok {
		t.Fatalf("unknown then another buyer reserved the only unit: %s", hc.Result)
	}
	// Both cannot be true: the unknown try's retry is told it holds the
	// unit, and so is the other buyer.
	both := h(
		buy(0, "u1", "r1", 0, 10, Unknown, ""),
		buy(1, "u2", "r2", 20, 30, Reserved, "B"),
		buy(0, "u1", "r1", 40, 50, Reserved, "A"),
	)
	if hc := check(t, both, 1, 1); hc.Result != porcupine.Illegal {
		t.Fatalf("one unit held by two buyers after an unknown was judged %s", hc.Result)
	}
}

// TestCheckHistoryWritesVisualization: a failed check leaves porcupine's
// HTML where asked; a passing one writes nothing.
func TestCheckHistoryWritesVisualization(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.html")
	hc, err := CheckHistory(h(buy(0, "u1", "r1", 0, 10, Reserved, "A"), buy(1, "u2", "r2", 20, 30, Reserved, "B")), 1, 1, 10*time.Second, bad)
	if err != nil || hc.Result != porcupine.Illegal || hc.HTML != bad {
		t.Fatalf("check: %+v %v", hc, err)
	}
	if fi, err := os.Stat(bad); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization: %v", err)
	}
	good := filepath.Join(dir, "good.html")
	if hc, err := CheckHistory(h(buy(0, "u1", "r1", 0, 10, Reserved, "A")), 1, 1, 10*time.Second, good); err != nil || hc.Result != porcupine.Ok || hc.HTML != "" {
		t.Fatalf("check: %+v %v", hc, err)
	}
	if _, err := os.Stat(good); !os.IsNotExist(err) {
		t.Fatalf("a passing check wrote %s (%v)", good, err)
	}
}
