package llm

import "encoding/json"

// Usage is the tokens one call (or a sum of calls) cost. The package documentation says how
// each provider's fields map onto it; CachedTokens and CacheCreationTokens are parts of
// InputTokens, never additions to it.
type Usage struct {
	InputTokens         int64 `json:"inputTokens"`
	OutputTokens        int64 `json:"outputTokens"`
	CachedTokens        int64 `json:"cachedTokens"`
	CacheCreationTokens int64 `json:"cacheCreationTokens"`
}

// Total is InputTokens + OutputTokens: every token billed, each counted once.
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }

// Add returns the sum of u and v, field by field.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		InputTokens:         u.InputTokens + v.InputTokens,
		OutputTokens:        u.OutputTokens + v.OutputTokens,
		CachedTokens:        u.CachedTokens + v.CachedTokens,
		CacheCreationTokens: u.CacheCreationTokens + v.CacheCreationTokens,
	}
}

// IsZero reports whether no token was counted.
func (u Usage) IsZero() bool { return u == Usage{} }

// MarshalJSON writes the four counts and totalTokens, the shape every usage object of the
// platform's API has. totalTokens is derived, so it is ignored when decoding.
func (u Usage) MarshalJSON() ([]byte, error) {
	type plain Usage
	return json.Marshal(struct {
		plain
		TotalTokens int64 `json:"totalTokens"`
	}{plain(u), u.Total()})
}
