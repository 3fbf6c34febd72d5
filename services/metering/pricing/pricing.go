// Package pricing reads the metering's price table: what a million input, output and cached
// tokens cost for each provider and model, and what a container-second costs. Prices come
// from a JSON file the operator edits (default.json, embedded, when none is given); every
// amount is an integer number of micros (Micros), and every table has a version label and a
// content digest, so each ledger row can name exactly the prices it was charged at.
//
// A model the table does not price is reported as unpriced by Lookup, never as free: a free
// model must be listed with zero prices.
package pricing

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

//go:embed default.json
var defaultFile []byte

// File is the price file as the operator writes it. See default.json for an example.
//
//	{
//	  "version": "2025-06",              // a label; a changed table needs a new one
//	  "currency": "USD",                 // ISO 4217; every version must use the same
//	  "containerSecond": "0.000010",     // per second a tenant container runs
//	  "models": [
//	    {"provider": "anthropic", "model": "claude-sonnet-4*",
//	     "inputPerMillion": "3.00", "outputPerMillion": "15.00", "cachedPerMillion": "0.30"}
//	  ]
//	}
//
// A model ending in "*" matches every model that starts with the part before it; "*" alone
// matches any model of the provider, and provider "*" any provider. The most specific entry
// wins: exact provider before "*", exact model before the longest matching prefix.
// cachedPerMillion defaults to inputPerMillion (no discount for cached input). Amounts are
// decimal strings or numbers in currency units with at most six decimals.
type File struct {
	Version         string        `json:"version"`
	Currency        string        `json:"currency"`
	ContainerSecond *Micros       `json:"containerSecond"`
	Models          []ModelPrices `json:"models"`
	// Note is free text for the operator; it is not part of the prices.
	Note string `json:"note,omitempty"`
}

// ModelPrices are the prices of one provider's model, or of a family of models.
type ModelPrices struct {
	Provider         string  `json:"provider"`
	Model            string  `json:"model"`
	InputPerMillion  *Micros `json:"inputPerMillion"`
	OutputPerMillion *Micros `json:"outputPerMillion"`
	CachedPerMillion *Micros `json:"cachedPerMillion,omitempty"`
	Note             string  `json:"note,omitempty"`
}

// Rate is what a million tokens of each kind cost under one model's prices.
type Rate struct {
	Input, Output, Cached Micros
}

// TokenCost is the cost of a usage line: uncached input (input minus cached), cached input and
// output, each at its rate, rounded to the nearest micro (half away from zero). InputTokens
// includes CachedTokens, as events.Usage defines them.
func (r Rate) TokenCost(input, output, cached int64) Micros {
	return Micros(mulDiv(1_000_000,
		[2]int64{input - cached, int64(r.Input)},
		[2]int64{cached, int64(r.Cached)},
		[2]int64{output, int64(r.Output)}))
}

// Table is a parsed, validated price table. It is immutable and safe for concurrent use.
type Table struct {
	label           string
	currency        string
	containerSecond Micros
	digest          [sha256.Size]byte
	canonical       []byte

	exact    map[[2]string]Rate        // (provider, model) → rate
	prefixes map[string][]prefixedRate // provider → model prefixes, longest first
}

type prefixedRate struct {
	prefix string
	rate   Rate
}

// Label is the table's version label from the file.
func (t *Table) Label() string { return t.label }

// Currency is the ISO 4217 code every amount of the table is in.
func (t *Table) Currency() string { return t.currency }

// ContainerSecond is the price of one second of a tenant container's run time.
func (t *Table) ContainerSecond() Micros { return t.containerSecond }

// Digest identifies the table's content: two files with the same prices, however formatted,
// have the same digest.
func (t *Table) Digest() []byte { return t.digest[:] }

// DigestHex is Digest in hex.
func (t *Table) DigestHex() string { return hex.EncodeToString(t.digest[:]) }

// Canonical is the table as normalized JSON: the form stored beside each price version, from
// which Parse rebuilds the same table.
func (t *Table) Canonical() []byte { return bytes.Clone(t.canonical) }

// ContainerCost is the cost of ms milliseconds of container run time, rounded to the nearest
// micro. Negative durations (corrections) cost negative amounts.
func (t *Table) ContainerCost(ms int64) Micros {
	return ContainerCost(t.containerSecond, ms)
}

// ContainerCost is the cost of ms milliseconds of container run time at perSecond, rounded to
// the nearest micro (half away from zero).
func ContainerCost(perSecond Micros, ms int64) Micros {
	return Micros(mulDiv(1000, [2]int64{ms, int64(perSecond)}))
}

// Lookup returns the rate of provider's model, and false when the table does not price it.
// Names are compared case-insensitively.
func (t *Table) Lookup(provider, model string) (Rate, bool) {
	provider, model = strings.ToLower(provider), strings.ToLower(model)
	for _, p := range []string{provider, "*"} {
		if r, ok := t.exact[[2]string{p, model}]; ok {
			return r, true
		}
		for _, pr := range t.prefixes[p] {
			if strings.HasPrefix(model, pr.prefix) {
				return pr.rate, true
			}
		}
	}
	return Rate{}, false
}

// Default returns the built-in price table (default.json).
func Default() *Table {
	t, err := Parse(defaultFile)
	if err != nil {
		panic(fmt.Sprintf("pricing: built-in default.json is invalid: %v", err)) // caught by the package's tests
	}
	return t
}

// Load reads and parses the price file at path; an empty path returns Default.
func Load(path string) (*Table, error) {
	if path == "" {
		return Default(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price file: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("price file %s: %w", path, err)
	}
	return t, nil
}

var (
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
	nameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._:/@+-]*$`)
)

// Parse reads a price file and checks it. Errors name the entry that is wrong. Unknown fields
// are errors, so a misspelt price is never read as a missing one.
func Parse(b []byte) (*Table, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode: data after the price table")
	}
	f.Version = strings.TrimSpace(f.Version)
	switch {
	case f.Version == "":
		return nil, errors.New(`"version" is required: a label such as "2025-06" that names these prices`)
	case len(f.Version) > 64:
		return nil, errors.New(`"version" is longer than 64 characters`)
	case !currencyRE.MatchString(f.Currency):
		return nil, fmt.Errorf(`"currency" %q is not an ISO 4217 code such as "USD"`, f.Currency)
	case f.ContainerSecond == nil:
		return nil, errors.New(`"containerSecond" is required: the price of one second of container run time ("0" if it is free)`)
	case *f.ContainerSecond > maxPrice:
		return nil, errors.New(`"containerSecond" is implausibly large`)
	}

	t := &Table{
		label:           f.Version,
		currency:        f.Currency,
		containerSecond: *f.ContainerSecond,
		exact:           map[[2]string]Rate{},
		prefixes:        map[string][]prefixedRate{},
	}
	seen := map[[2]string]bool{}
	for i, m := range f.Models {
		where := fmt.Sprintf("models[%d] (%s/%s)", i, m.Provider, m.Model)
		m.Provider, m.Model = strings.ToLower(strings.TrimSpace(m.Provider)), strings.ToLower(strings.TrimSpace(m.Model))
		if m.Provider != "*" && !nameRE.MatchString(m.Provider) {
			return nil, fmt.Errorf(`%s: "provider" must be a provider name such as "anthropic", or "*"`, where)
		}
		prefix, isPrefix := strings.CutSuffix(m.Model, "*")
		if (prefix != "" || !isPrefix) && !nameRE.MatchString(prefix) {
			return nil, fmt.Errorf(`%s: "model" must be a model name, a prefix ending in "*", or "*"`, where)
		}
		if m.InputPerMillion == nil || m.OutputPerMillion == nil {
			return nil, fmt.Errorf(`%s: "inputPerMillion" and "outputPerMillion" are required ("0" for a free model)`, where)
		}
		if m.CachedPerMillion == nil {
			m.CachedPerMillion = m.InputPerMillion
		}
		r := Rate{Input: *m.InputPerMillion, Output: *m.OutputPerMillion, Cached: *m.CachedPerMillion}
		if r.Input > maxPrice || r.Output > maxPrice || r.Cached > maxPrice {
			return nil, fmt.Errorf("%s: a price is implausibly large", where)
		}
		key := [2]string{m.Provider, m.Model}
		if seen[key] {
			return nil, fmt.Errorf("%s: listed twice", where)
		}
		seen[key] = true
		f.Models[i] = m
		if isPrefix {
			t.prefixes[m.Provider] = append(t.prefixes[m.Provider], prefixedRate{prefix: prefix, rate: r})
		} else {
			t.exact[key] = r
		}
	}
	for _, list := range t.prefixes {
		slices.SortFunc(list, func(a, b prefixedRate) int { return len(b.prefix) - len(a.prefix) })
	}

	// The canonical form: sorted entries, defaults filled in, no notes. Its digest identifies
	// the prices regardless of formatting, order or comments.
	slices.SortFunc(f.Models, func(a, b ModelPrices) int {
		return strings.Compare(a.Provider+"\x00"+a.Model, b.Provider+"\x00"+b.Model)
	})
	f.Note = ""
	for i := range f.Models {
		f.Models[i].Note = ""
	}
	if f.Models == nil {
		f.Models = []ModelPrices{}
	}
	canonical, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode canonical table: %w", err)
	}
	t.canonical = canonical
	t.digest = sha256.Sum256(canonical)
	return t, nil
}
