// Package money is the platform's amount of money: an integer number of millionths of a
// currency unit, parsed from and written as a decimal string, never through a float.
package money

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Micros is an amount of money in millionths of the currency unit: 1 USD is 1_000_000 micros.
// Every amount the platform stores or adds up is an integer number of micros, so sums are
// exact and do not depend on the order they are added in.
type Micros int64

// maxUnits bounds a parsed amount: a million million currency units, well inside an int64 of
// micros.
const maxUnits = 1_000_000_000_000

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
	if err != nil || w > maxUnits {
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

// MarshalJSON writes m as a decimal string in currency units.
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
