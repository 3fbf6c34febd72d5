package pricing

import (
	"math"
	"math/big"

	"github.com/convergence-dev/convergence/pkg/money"
)

// Micros is an amount of money in millionths of the currency unit (money.Micros).
type Micros = money.Micros

// ParseMicros parses a non-negative decimal amount in currency units (money.ParseMicros).
func ParseMicros(s string) (Micros, error) { return money.ParseMicros(s) }

// maxPrice bounds a price in a price file: a million currency units per million tokens or per
// container-second. It keeps every product of a price and a count inside 128 bits with room to
// spare, and catches a price typed with a few digits too many.
const maxPrice = Micros(1_000_000 * 1_000_000)

// mulDiv returns round(Σ a[i]·b[i] / d), rounding half away from zero. Counts and prices
// below a billion take the int64 path; anything larger is computed exactly with big.Int, so
// no input overflows.
func mulDiv(d int64, pairs ...[2]int64) int64 {
	const small = 1_000_000_000
	fast := true
	for _, p := range pairs {
		if p[0] >= small || p[0] <= -small || p[1] >= small || p[1] <= -small {
			fast = false
			break
		}
	}
	if fast && len(pairs) <= 9 { // each product < 1e18, so nine of them fit in an int64
		var n int64
		for _, p := range pairs {
			n += p[0] * p[1]
		}
		return roundDiv(n, d)
	}
	n := new(big.Int)
	for _, p := range pairs {
		n.Add(n, new(big.Int).Mul(big.NewInt(p[0]), big.NewInt(p[1])))
	}
	q, r := new(big.Int).QuoRem(n, big.NewInt(d), new(big.Int))
	if new(big.Int).Abs(r).Cmp(new(big.Int).Quo(big.NewInt(d+1), big.NewInt(2))) >= 0 {
		if n.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	if !q.IsInt64() {
		if q.Sign() < 0 {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return q.Int64()
}

// roundDiv divides n by d > 0, rounding half away from zero, as PostgreSQL's round(numeric)
// does.
func roundDiv(n, d int64) int64 {
	q, r := n/d, n%d
	if r < 0 {
		r = -r
	}
	if 2*r >= d {
		if n < 0 {
			q--
		} else {
			q++
		}
	}
	return q
}
