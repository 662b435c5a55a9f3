package main

import (
	"flashsale/quota/layout"

	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"flashsale/regional/orders"
)

func newOrdersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "orders",
		Short: "Check a region's SQL order store against its Redis (run next to the region)",
	}
	cmd.AddCommand(newReconcileCmd())
	return cmd
}

// reconcileView is the JSON form of a reconcile report.
type reconcileView struct {
	Sale         string     `json:"sale"`
	Region       string     `json:"region"`
	Reservations int        `json:"reservations"`
	Rows         int        `json:"rows"`
	Lag          int64      `json:"lag"`
	Differences  []diffView `json:"differences"`
	Repaired     bool       `json:"repaired"`
	Replayed     int        `json:"replayed,omitempty"`
	Before       []diffView `json:"differencesBeforeRepair,omitempty"`
}

type diffView struct {
	Kind  string `json:"kind"`
	Resv  string `json:"reservation"`
	Redis string `json:"redis"`
	SQL   string `json:"sql"`
}

func diffViews(ds []orders.Diff) []diffView {
	out := make([]diffView, 0, len(ds))
	for _, d := range ds {
		out = append(out, diffView{Kind: d.Kind, Resv: d.Resv, Redis: d.Redis, SQL: d.SQL})
	}
	return out
}

func newReconcileCmd() *cobra.Command {
	var region, redisAddr, dsn string
	var repair bool
	cmd := &cobra.Command{
		Use:   "reconcile SALE",
		Short: "Compare a sale's Redis state with its SQL order rows in one region; --repair replays the order stream into SQL (exit status 1 while differences remain)",
		Long: `reconcile reads the sale's ledger, per-user counts and every reservation from the
region's Redis, and the sale's order rows from the region's SQL store, and prints
where they disagree. It talks to both directly, so run it where it can reach them.

--repair replays the whole order stream into SQL. That is always safe: writes are
idempotent and only move a row forward, so it never deletes an order nor moves a
paid one back. It fixes missing_in_sql and sql_behind. sql_ahead, missing_in_redis,
state_conflict and user_mismatch mean Redis lost writes: halt the region and raise
its floor from SQL (DESIGN §4) instead.`,
		Args: needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case region == "":
				return errors.New("--region is required: the region whose Redis and order store to compare")
			case redisAddr == "":
				return errors.New("--redis is required: the region's Redis host:port (or set FLASHSALE_REDIS)")
			case dsn == "":
				return errors.New("--dsn is required: the region's order store, sqlite:///path or postgres://... (or set FLASHSALE_ORDERS_DSN)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			rdb := redis.NewClient(&redis.Options{Addr: redisAddr, Password: os.Getenv("FLASHSALE_REDIS_PASSWORD")})
			defer rdb.Close()
			if err := rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("cannot reach Redis at %s (%v): is the region's Redis running? Point --redis at it", redisAddr, err)
			}
			store, err := orders.Open(ctx, dsn)
			if err != nil {
				return fmt.Errorf("--dsn: %w", err)
			}
			defer store.Close()
			if err := checkSaleKnown(ctx, rdb, store, args[0], region, redisAddr); err != nil {
				return err
			}
			rep, err := orders.Reconcile(ctx, rdb, store, orders.ReconcileOptions{Sale: args[0], Region: region, Repair: repair})
			if err != nil {
				return err
			}
			v := reconcileView{Sale: rep.Sale, Region: rep.Region, Reservations: rep.Reservations, Rows: rep.Rows, Lag: rep.Lag,
				Differences: diffViews(rep.Diffs), Repaired: repair, Replayed: rep.Replayed}
			if repair {
				v.Before = diffViews(rep.DiffsBefore)
			}
			err = emit(cmd.OutOrStdout(), v, func(w io.Writer) {
				row(w, "SALE", "REGION", "RESERVATIONS", "ROWS", "STREAM LAG")
				row(w, v.Sale, v.Region, v.Reservations, v.Rows, lagText(v.Lag))
				if repair {
					row(w)
					row(w, fmt.Sprintf("repair: replayed %d stream entries; %d differences before, %d after", v.Replayed, len(v.Before), len(v.Differences)))
				}
				row(w)
				if len(v.Differences) == 0 {
					row(w, "no differences: Redis and SQL agree")
					return
				}
				row(w, "KIND", "RESERVATION", "REDIS", "SQL")
				for _, d := range v.Differences {
					row(w, d.Kind, d.Resv, orDash(d.Redis), orDash(d.SQL))
				}
			})
			if err != nil {
				return err
			}
			if len(rep.Diffs) > 0 {
				return remainingError(rep, repair)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&region, "region", os.Getenv("FLASHSALE_REGION"), "region to check (env FLASHSALE_REGION)")
	f.StringVar(&redisAddr, "redis", os.Getenv("FLASHSALE_REDIS"), "the region's Redis host:port (env FLASHSALE_REDIS; password from FLASHSALE_REDIS_PASSWORD)")
	f.StringVar(&dsn, "dsn", os.Getenv("FLASHSALE_ORDERS_DSN"), "the region's order store: sqlite:///path/orders.db or postgres://... (env FLASHSALE_ORDERS_DSN)")
	f.BoolVar(&repair, "repair", false, "replay the order stream into SQL (safe: never deletes or moves a paid order back)")
	return cmd
}

// checkSaleKnown refuses a sale neither side knows: most likely a typo or
// the wrong Redis, which would otherwise read as "no differences". A sale
// with SQL rows but nothing in Redis is compared (Redis lost it).
func checkSaleKnown(ctx context.Context, rdb redis.UniversalClient, store orders.Store, sale, region, addr string) error {
	n, err := rdb.Exists(ctx, layout.SaleKey(sale, "ledger"), layout.StreamKey(sale)).Result()
	if err != nil {
		return fmt.Errorf("redis %s: %w", addr, err)
	}
	if n > 0 {
		return nil
	}
	rows, err := store.Orders(ctx, sale, region)
	if err != nil {
		return fmt.Errorf("order store: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("sale %s is unknown in region %s: neither the Redis at %s nor the order store has it; check the sale id, --region and --redis", sale, region, addr)
	}
	return nil
}

// remainingError says what to do about the differences left.
func remainingError(rep orders.Report, repaired bool) error {
	fixable, lost := 0, 0
	for _, d := range rep.Diffs {
		switch d.Kind {
		case orders.MissingInSQL, orders.SQLBehind:
			fixable++
		case orders.Counter:
		default:
			lost++
		}
	}
	msg := fmt.Sprintf("%d difference(s) remain between Redis and SQL for sale %s in region %s", len(rep.Diffs), rep.Sale, rep.Region)
	switch {
	case lost > 0:
		msg += fmt.Sprintf("; %d of them mean Redis lost writes: halt the region and raise its floor from SQL (DESIGN §4)", lost)
	case fixable > 0 && !repaired:
		msg += "; run again with --repair to replay the order stream into SQL"
	case rep.Lag > 0:
		msg += fmt.Sprintf("; %d stream entries are still in flight to SQL: run again once the consumer caught up", rep.Lag)
	}
	return errors.New(msg)
}

func lagText(lag int64) string {
	if lag < 0 {
		return "unknown (no consumer group yet)"
	}
	return fmt.Sprint(lag)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
