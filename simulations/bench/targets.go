package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/redis/go-redis/v9"

	"flashsale/quota/layout"
	"flashsale/regional"
)

// httpTarget is an HTTP server on a loopback port.
type httpTarget struct {
	URL string
	srv *http.Server
	ln  net.Listener
}

// serve serves h on addr ("127.0.0.1:0" picks a port).
func serve(addr string, h http.Handler) (*httpTarget, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go func() { _ = srv.Serve(ln) }()
	return &httpTarget{URL: "http://" + ln.Addr().String(), srv: srv, ln: ln}, nil
}

// Close stops the server. Safe on nil.
func (t *httpTarget) Close() error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := t.srv.Shutdown(ctx); err != nil {
		return t.srv.Close()
	}
	return nil
}

// buyBody is the seller's buy request (regional/openapi.yaml), decoded as
// strictly as the seller does.
type buyBody struct {
	ItemID    string `json:"itemId"`
	UserID    string `json:"userId"`
	RequestID string `json:"requestId"`
}

type resvBody struct {
	ReservationID string `json:"reservationId"`
	ItemID        string `json:"itemId"`
	UserID        string `json:"userId"`
	RequestID     string `json:"requestId"`
	State         string `json:"state"`
}

func decodeBuy(w http.ResponseWriter, r *http.Request) (buyBody, bool) {
	var in buyBody
	// encoding/json/v2, unknown members refused: as the seller decodes.
	err := jsonv2.UnmarshalRead(http.MaxBytesReader(w, r.Body, 4<<10), &in, jsonv2.RejectUnknownMembers(true))
	if err != nil || in.ItemID == "" || in.RequestID == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": "bad_json", "message": fmt.Sprint(err)})
		return in, false
	}
	return in, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// bareHandler decodes the buy JSON and answers a reservation: no identity,
// no state, no I/O. The ceiling any seller is measured against.
func bareHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /v1/flash-sale/buy", func(w http.ResponseWriter, r *http.Request) {
		in, ok := decodeBuy(w, r)
		if !ok {
			return
		}
		writeJSON(w, http.StatusCreated, resvBody{ReservationID: in.RequestID, ItemID: in.ItemID, UserID: in.UserID, RequestID: in.RequestID, State: "active"})
	})
	return mux
}

// counterScript is the whole of the single-global-counter design: check
// the stock and take a unit, atomically.
var counterScript = redis.NewScript(`
local sold = tonumber(redis.call('GET', KEYS[1]) or '0')
if sold >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1`)

// counterHandler sells from one global counter in rdb (reached through a
// delay proxy to play a Redis in another region).
func counterHandler(rdb redis.UniversalClient, key string, total int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/flash-sale/buy", func(w http.ResponseWriter, r *http.Request) {
		in, ok := decodeBuy(w, r)
		if !ok {
			return
		}
		n, err := counterScript.Run(r.Context(), rdb, []string{key}, total).Int64()
		switch {
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"code": "unavailable", "message": err.Error()})
		case n == 0:
			writeJSON(w, http.StatusGone, map[string]string{"code": "sold_out"})
		default:
			writeJSON(w, http.StatusCreated, resvBody{ReservationID: in.RequestID, ItemID: in.ItemID, UserID: in.UserID, RequestID: in.RequestID, State: "active"})
		}
	})
	return mux
}

// Sales the seller is started with.
const (
	saleOpen    = "bench-open"    // stock for every attempt of the run
	saleSoldOut = "bench-soldout" // no stock: answered from memory
	openStock   = 1 << 40
)

// startSeller runs the real regional seller (JWT identity, batcher on)
// on listen against rdb with the two bench sales. weakDurability lets it
// sell from a Redis that does not fsync every write.
func startSeller(ctx context.Context, rdb redis.UniversalClient, listen, region string, secret []byte, log *slog.Logger, weakDurability bool) (*regional.Server, string, error) {
	cfg := regional.DevConfig()
	cfg.ListenAddr = listen
	cfg.Region = region
	cfg.AllowWeakDurability = weakDurability
	cfg.JWT.HS256Secret = secret
	// The production budget for a request's Redis work (DevConfig's 2 s
	// suits tests on a loaded machine, not a latency measurement).
	cfg.RedisTimeout = regional.DefaultConfig().RedisTimeout
	start := time.Now().Add(-time.Minute)
	cfg.Sales = []layout.SaleSpec{
		{ID: saleOpen, Total: openStock, PerUserLimit: 1, StartsAt: start, ReservationTTL: time.Hour},
		{ID: saleSoldOut, Total: 1000, PerUserLimit: 1, StartsAt: start, ReservationTTL: time.Hour},
		{ID: saleGoodput, Total: openStock, PerUserLimit: 1, StartsAt: start, ReservationTTL: time.Hour},
	}
	cfg.StaticGrants = map[string]int64{saleOpen: openStock, saleSoldOut: 0, saleGoodput: openStock}
	srv, err := regional.New(cfg, regional.Deps{Redis: rdb, Logger: log})
	if err != nil {
		return nil, "", fmt.Errorf("seller: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return nil, "", fmt.Errorf("seller: %w", err)
	}
	rd := srv.CheckReady(ctx)
	if !rd.Ready {
		_ = srv.Close()
		return nil, "", errors.New("seller not ready: " + fmt.Sprintf("%+v", rd))
	}
	return srv, "http://" + srv.Addr(), nil
}
