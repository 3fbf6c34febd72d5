package pricing

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Micros is an amount of money in millionths of the currency unit: 1 USD is 1_000_000 micros.
// Every amount the metering stores or adds up is an integer number of micros, so sums are
// exact and do not depend on the order they are added in.
type Micros int64

// maxPrice bounds a price in a price file: a million currency units per million tokens or per
// container-second. It keeps every product of a price and a count inside 128 bits with room to
// spare, and catches a price typed with a few digits too many.
const maxPrice = Micros(1_000_000 * 1_000_000)

// ParseMicros parses a non-negative decimal amount in currency units, such as "3", "0.30" or
// "0.000012", into micros. More than six decimal places cannot be represented and are refused
// rather than rounded.
func ParseMicros(s string) (Micros, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty amount")
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || strings.IndexFunc(whole, notDigit) >= 0 || (hasDot && (frac == "" || strings.IndexFunc(frac, notDigit) >= 0)) {
		return 0, fmt.Errorf("amount %q is not a non-negative decimal number such as 3 or 0.30", s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("amount %q has more than 6 decimal places; amounts are kept in millionths", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > int64(maxPrice/1_000_000) {
		return 0, fmt.Errorf("amount %q is too large", s)
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return Micros(w*1_000_000 + f), nil
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

// String formats m in currency units with six decimals: "3.000000", "-0.000012".
func (m Micros) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m) // -MinInt64 wraps to itself, and as uint64 it is right.
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/1_000_000, u%1_000_000)
}

// MarshalJSON writes m as a decimal string in currency units, the form a price file uses.
func (m Micros) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// UnmarshalJSON reads a decimal amount in currency units, written as a string ("0.30") or as
// a JSON number (0.30). A number is parsed from its text, never through a float.
func (m *Micros) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParseMicros(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

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
