package cli

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
)

// column is a table column: its header and the key of the value, dotted for nested objects.
type column struct {
	header, key string
}

// table writes rows under a header line, aligned.
func table(w io.Writer, rows []map[string]any, cols []column) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	headers := make([]string, len(cols))
	for i, c := range cols {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = cell(lookup(r, c.key))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// vertical writes one object as "HEADER  value" lines.
func vertical(w io.Writer, obj map[string]any, cols []column) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cols {
		if v := lookup(obj, c.key); v != nil {
			fmt.Fprintf(tw, "%s\t%s\n", c.header, cell(v))
		}
	}
	return tw.Flush()
}

// page writes the rows of a list answer, under key, as a table, and then how to get the next
// page, if there is one.
func page(w io.Writer, a map[string]any, key string, cols []column) error {
	if err := table(w, list(a, key), cols); err != nil {
		return err
	}
	if next, _ := a["nextCursor"].(string); next != "" {
		_, err := fmt.Fprintf(w, "\nMore: add -cursor %s\n", next)
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
func message(w io.Writer, a map[string]any) error {
	if m, ok := a["message"].(string); ok {
		_, err := fmt.Fprintln(w, "\n"+m)
		return err
	}
	return nil
}

// lookup returns the value at a dotted key, or nil.
func lookup(obj map[string]any, key string) any {
	var v any = obj
	for _, part := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

func cell(v any) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(v)
}

func object(a map[string]any, key string) map[string]any {
	m, _ := a[key].(map[string]any)
	return m
}

func list(a map[string]any, key string) []map[string]any {
	items, _ := a[key].([]any)
	rows := make([]map[string]any, 0, len(items))
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			rows = append(rows, m)
		}
	}
	return rows
}
