package orders

import (
	"context"
	"log/slog"

	"flashsale/regional/redisstore"
)

// Witness is the region agent's second witness (agent.Witness): when the
// region's Redis lost writes, the agent halts the sale and calls Restore,
// which rebuilds the reservations from the order stream and the SQL store
// (Restore above) before the agent raises its floors and resumes selling.
type Witness struct {
	redis *redisstore.Store
	sql   Store
	log   *slog.Logger
}

// NewWitness is the witness over a region's Redis and its SQL order
// store. A nil logger discards.
func NewWitness(rs *redisstore.Store, sql Store, log *slog.Logger) *Witness {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Witness{redis: rs, sql: sql, log: log}
}

// Restore runs Restore for sale under the agent's fence and answers the sold count it left in
// Redis: at least every unit the witnesses saw confirmed, the floor the
// agent raises sold to. Conflicts are logged for an operator; they do not
// stop the region (Restore leaves those reservations as Redis has them).
func (w *Witness) Restore(ctx context.Context, sale string, fence int64) (soldFloor int64, err error) {
	res, err := Restore(ctx, w.redis, w.sql, sale, fence)
	if err != nil {
		return 0, err
	}
	w.log.Warn("reservations restored from the order stream and the SQL store", "sale", sale, "region", res.Region,
		"witnessed", res.Witnessed, "fromStream", res.FromStream, "fromSQL", res.FromSQL,
		"created", res.Created, "advanced", res.Advanced, "extended", res.Extended, "same", res.Same,
		"sold", res.Counts.Sold, "reserved", res.Counts.Reserved, "conflicts", len(res.Conflicts))
	for _, d := range res.Conflicts {
		w.log.Error("restore conflict left for an operator", "sale", sale, "region", res.Region, "kind", d.Kind, "reservation", d.Resv, "sql", d.SQL)
	}
	return res.Counts.Sold, nil
}
