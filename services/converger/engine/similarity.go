package engine

import (
	"slices"
	"unicode"
	"unicode/utf8"
)

// shingles returns the sorted, de-duplicated 64-bit hashes of the word bigrams of text.
// Words are maximal runs of letters and digits, lower-cased; a text of a single word yields
// that word. Hashing keeps comparison allocation-free and fast; with 64-bit FNV-1a hashes a
// collision between distinct bigrams of two proposals is vanishingly unlikely.
func shingles(text string) []uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	out := make([]uint64, 0, len(text)/6+1)
	var prev, cur uint64
	words, inWord := 0, false
	endWord := func() {
		if words > 0 {
			out = append(out, mixPair(prev, cur))
		}
		prev, words, inWord = cur, words+1, false
	}
	for i := 0; i < len(text); {
		c := text[i]
		var r rune
		if c < utf8.RuneSelf {
			r = rune(c)
			i++
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			} else if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
				if inWord {
					endWord()
				}
				continue
			}
		} else {
			var size int
			r, size = utf8.DecodeRuneInString(text[i:])
			i += size
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				if inWord {
					endWord()
				}
				continue
			}
			r = unicode.ToLower(r)
		}
		if !inWord {
			cur, inWord = offset, true
		}
		if r < utf8.RuneSelf {
			cur = (cur ^ uint64(r)) * prime
		} else {
			var buf [utf8.UTFMax]byte
			for _, b := range buf[:utf8.EncodeRune(buf[:], r)] {
				cur = (cur ^ uint64(b)) * prime
			}
		}
	}
	if inWord {
		endWord()
	}
	if words == 1 {
		out = append(out, prev)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// mixPair combines two word hashes into a bigram hash that depends on their order.
func mixPair(a, b uint64) uint64 {
	x := a*0x9e3779b97f4a7c15 ^ b
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	return x ^ x>>29
}

// jaccard is |a ∩ b| / |a ∪ b| for sorted, de-duplicated sets: 1 when both are empty.
func jaccard(a, b []uint64) float64 {
	if len(a) == 0 && len(b) == 0 {
		return 1
	}
	inter, i, j := 0, 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			inter++
			i++
			j++
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return float64(inter) / float64(len(a)+len(b)-inter)
}
