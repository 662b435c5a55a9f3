package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// CPU split of a goodput point: the generator shares the machine's cores
// with the seller and its Redis, so a point's figures mean little without
// knowing who used the CPU. Each side reports its own: this process by
// getrusage, the seller by its process_cpu_seconds_total metric, Redis by
// INFO cpu.

// cpuTimes is the CPU time (user + system, seconds) used so far.
type cpuTimes struct {
	gen, seller, redis float64
	at                 time.Time
}

// CPUUse is a point's CPU in cores (CPU seconds per second of the point),
// and the seller's CPU per HTTP request it answered.
type CPUUse struct {
	Gen            float64 `json:"generator_cores"`
	Seller         float64 `json:"seller_cores"`
	Redis          float64 `json:"redis_cores"`
	SellerPerReqUs float64 `json:"seller_us_per_request"`
}

func readCPU(ctx context.Context, sellerURL string, rdb *redis.Client) (cpuTimes, error) {
	t := cpuTimes{at: time.Now()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return t, err
	}
	t.gen = tv(ru.Utime) + tv(ru.Stime)
	var err error
	if t.seller, err = sellerCPU(ctx, sellerURL); err != nil {
		return t, err
	}
	info, err := rdb.InfoMap(ctx, "cpu").Result()
	if err != nil {
		return t, fmt.Errorf("redis INFO cpu: %w", err)
	}
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(info["CPU"][k], 64)
		if err != nil {
			return t, fmt.Errorf("redis INFO cpu %s: %w", k, err)
		}
		t.redis += v
	}
	return t, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// sellerCPU reads process_cpu_seconds_total from the seller's /metrics.
func sellerCPU(ctx context.Context, sellerURL string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sellerURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("seller metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("seller metrics: %w", err)
	}
	return 0, fmt.Errorf("seller metrics: no process_cpu_seconds_total")
}

// use is the CPU between two readings; requests is how many HTTP
// requests the seller answered in between.
func use(a, b cpuTimes, requests int) CPUUse {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return CPUUse{}
	}
	u := CPUUse{Gen: (b.gen - a.gen) / wall, Seller: (b.seller - a.seller) / wall, Redis: (b.redis - a.redis) / wall}
	if requests > 0 {
		u.SellerPerReqUs = (b.seller - a.seller) / float64(requests) * 1e6
	}
	return u
}
