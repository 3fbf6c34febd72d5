package ledger

import (
	"fmt"
	"time"
)

// ParseDay parses a UTC day written YYYY-MM-DD.
func ParseDay(s string) (time.Time, error) {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a day: write it YYYY-MM-DD, e.g. 2025-01-31 (days are UTC)", s)
	}
	return d, nil
}

// ParseRange parses the first and last day of a range, inclusive. An empty last day is now's
// day; an empty first day is the first day of the last day's month.
func ParseRange(from, to string, now time.Time) (time.Time, time.Time, error) {
	last := utcDay(now)
	var err error
	if to != "" {
		if last, err = ParseDay(to); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("to: %w", err)
		}
	}
	first := utcMonth(last)
	if from != "" {
		if first, err = ParseDay(from); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("from: %w", err)
		}
	}
	if last.Before(first) {
		return time.Time{}, time.Time{}, fmt.Errorf("to (%s) is before from (%s)", last.Format(time.DateOnly), first.Format(time.DateOnly))
	}
	return first, last, nil
}
