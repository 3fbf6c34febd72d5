package cli

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// column is a table column of T: its header and how to read its value from a T.
type column[T any] struct {
	header string
	value  func(T) any
}

// table writes rows under a header line, aligned.
func table[T any](w io.Writer, rows []T, cols []column[T]) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	headers := make([]string, len(cols))
	for i, c := range cols {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = cell(c.value(r))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// vertical writes one object as "HEADER  value" lines, leaving out what it has no value for.
func vertical[T any](w io.Writer, obj T, cols []column[T]) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cols {
		if v := c.value(obj); !empty(v) {
			fmt.Fprintf(tw, "%s\t%s\n", c.header, cell(v))
		}
	}
	return tw.Flush()
}

// page writes the rows of a list answer as a table, and then how to get the next page, if
// there is one.
func page[T any](w io.Writer, rows []T, next *string, cols []column[T]) error {
	if err := table(w, rows, cols); err != nil {
		return err
	}
	if next != nil && *next != "" {
		_, err := fmt.Fprintf(w, "\nMore: add -cursor %s\n", *next)
		return err
	}
	return nil
}

// pageFlags registers -limit and -cursor, the paging of a list command, on fs, and returns
// the query of a request with them set: q, or a new query when q is nil.
func pageFlags(fs *flag.FlagSet) func(q url.Values) url.Values {
	limit := fs.Int("limit", 0, "page size")
	cursor := fs.String("cursor", "", "the next page, as the previous page said")
	return func(q url.Values) url.Values {
		if q == nil {
			q = url.Values{}
		}
		if *limit != 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		return q
	}
}

// message writes an answer's message, if it has one, after a blank line.
func message(w io.Writer, m string) error {
	if m == "" {
		return nil
	}
	_, err := fmt.Fprintln(w, "\n"+m)
	return err
}

// empty reports whether v is nothing to show: nil, a nil pointer, an empty string or a zero
// time.
func empty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return true
		}
		rv = rv.Elem()
	}
	if t, ok := rv.Interface().(time.Time); ok {
		return t.IsZero()
	}
	return rv.Kind() == reflect.String && rv.Len() == 0
}

// cell is v as a table shows it: "-" for nothing, times as RFC 3339, pointers followed.
func cell(v any) string {
	if empty(v) {
		return "-"
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		v = rv.Elem().Interface()
	}
	if t, ok := v.(time.Time); ok {
		return t.Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}
