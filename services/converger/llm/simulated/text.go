package simulated

import "strings"

// vocabularyText is the word list generated sentences draw from: technical English, so that
// lengths and token counts look like those of real design discussions.
const vocabularyText = `the service should cache requests per tenant with a bounded queue and retry
transient failures using exponential backoff while keeping writes idempotent through unique keys
so that replays never double count usage store events in an outbox table publish them after
commit validate input at the edge reject oversized payloads early measure latency percentiles
alert on error budgets encrypt secrets rotate credentials regularly document tradeoffs shard
partitions replicate across zones prefer simple designs defer optimisation until profiling shows
need schema migrations must be reversible feature flags gate risky rollouts canary deploys limit
blast radius load tests confirm capacity rate limits protect shared resources observability spans
connect logs metrics traces`

// sentence appends one deterministic sentence of 9 to 16 words for (seed, i) to b.
func (p *Provider) sentence(b *strings.Builder, seed, i uint64) {
	x := mix(seed ^ (i+1)*0xbf58476d1ce4e5b9)
	n := 9 + int(x%8)
	p.words(b, x, n)
	b.WriteString(". ")
}

// words appends n deterministic words for seed to b.
func (p *Provider) words(b *strings.Builder, seed uint64, n int) {
	x := seed
	for j := range n {
		x = mix(x + 0x9e3779b97f4a7c15)
		if j > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.vocab[x%uint64(len(p.vocab))])
	}
}

// mix is SplitMix64's finaliser: a cheap, well-spread 64-bit hash step.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hash is 64-bit FNV-1a.
func hash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
