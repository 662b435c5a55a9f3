package quota

// Refusal is what a buyer is told when their region cannot reserve because
// its own quota is used up (DESIGN L1): whether that means the sale is over
// depends on the rest of the sale, not on the region.
type Refusal int

const (
	// QuotaPending: the sale still has units neither sold nor reserved (in
	// the pool or in other regions); quota is on its way: retry.
	QuotaPending Refusal = iota
	// AllReserved: every unit is sold or held by an unpaid reservation;
	// units come back if reservations expire or are cancelled.
	AllReserved
	// SoldOutAll: every unit is sold. The only final answer.
	SoldOutAll
)

func (r Refusal) String() string {
	switch r {
	case QuotaPending:
		return "quota_pending"
	case AllReserved:
		return "all_reserved"
	case SoldOutAll:
		return "sold_out"
	}
	return "refusal(?)"
}

// Refuse decides the answer from sale-wide figures: the total, and units
// sold and reserved summed over every region. Sold only grows, so figures
// that lag (other regions' reports) can only understate it: SoldOutAll from
// lagging figures is still true, and a lag can only turn it into a
// retryable answer, never the other way round.
func Refuse(total, sold, reserved int64) Refusal {
	switch {
	case sold >= total:
		return SoldOutAll
	case sold+reserved >= total:
		return AllReserved
	}
	return QuotaPending
}
