package loadgen

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// RegionWeight is one region and its share of the users.
type RegionWeight struct {
	Name   string
	Weight float64
}

// ParseRegions reads "eu=5,us=3,ap=2" (weights need not sum to 1) or
// "eu,us,ap" (equal weights).
func ParseRegions(s string) ([]RegionWeight, error) {
	var out []RegionWeight
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, hasW := strings.Cut(part, "=")
		weight := 1.0
		if hasW {
			v, err := strconv.ParseFloat(w, 64)
			if err != nil || v <= 0 || math.IsInf(v, 0) {
				return nil, fmt.Errorf("region %q: weight %q is not a positive number", name, w)
			}
			weight = v
		}
		if name == "" {
			return nil, fmt.Errorf("region list %q: empty region name", s)
		}
		if seen[name] {
			return nil, fmt.Errorf("region list %q: %s twice", s, name)
		}
		seen[name] = true
		out = append(out, RegionWeight{Name: name, Weight: weight})
	}
	if len(out) == 0 {
		return nil, errors.New("region list is empty")
	}
	return out, nil
}

// Population is N distinct users, each with one home region drawn from
// the weights by a hash of the user's index: the same seed always gives
// the same users in the same regions.
type Population struct {
	N       int
	Regions []RegionWeight
	Seed    uint64

	cum []float64 // cumulative normalised weights
}

// User is one buyer: the id carried in the token's sub claim and the home
// region in its home_region claim.
type User struct {
	Index  int
	ID     string
	Region string
}

// NewPopulation checks the arguments and returns the population.
func NewPopulation(n int, regions []RegionWeight, seed uint64) (*Population, error) {
	if n < 1 || n > 1<<31 {
		return nil, fmt.Errorf("population of %d users: need 1 to 2^31", n)
	}
	if len(regions) == 0 {
		return nil, errors.New("population: no regions")
	}
	var sum float64
	for _, r := range regions {
		if r.Weight <= 0 {
			return nil, fmt.Errorf("population: region %s has weight %v", r.Name, r.Weight)
		}
		sum += r.Weight
	}
	p := &Population{N: n, Regions: regions, Seed: seed}
	acc := 0.0
	for _, r := range regions {
		acc += r.Weight / sum
		p.cum = append(p.cum, acc)
	}
	p.cum[len(p.cum)-1] = 1
	return p, nil
}

// User returns user i (0 <= i < N).
func (p *Population) User(i int) User {
	u := float64(splitmix(p.Seed^uint64(i))>>11) / (1 << 53)
	r := len(p.cum) - 1
	for k, c := range p.cum {
		if u < c {
			r = k
			break
		}
	}
	return User{Index: i, ID: "u" + strconv.Itoa(i), Region: p.Regions[r].Name}
}

// Order visits every user exactly once in a seeded pseudo-random order
// without storing a permutation of a million ids: the i-th visit is
// (a*i + c) mod N with a coprime to N.
type Order struct {
	n, a, c uint64
}

// NewOrder returns the visiting order of the population for seed.
func (p *Population) NewOrder(seed uint64) Order {
	n := uint64(p.N)
	a := splitmix(seed)%n | 1
	for gcd(a, n) != 1 {
		a = (a + 1) % n
		if a == 0 {
			a = 1
		}
	}
	return Order{n: n, a: a, c: splitmix(seed+1) % n}
}

// At returns the user index of visit i; visits 0..N-1 are all distinct.
// N is at most 2^31, so a*i cannot overflow.
func (o Order) At(i int) int {
	return int((o.a*(uint64(i)%o.n) + o.c) % o.n)
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// splitmix is SplitMix64's finaliser: a cheap, well-mixed hash.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
