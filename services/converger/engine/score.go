package engine

import "math"

// MethodVersion identifies how scores are computed; it changes whenever the weights or the
// components do, so stored scores can be compared only within one version.
const MethodVersion = "convergence-score/v1"

// The weights of the score's components. They sum to 1.
const (
	// WeightAgreement weighs the lower of the two agents' agreement ratings: the main signal,
	// and taking the lower one means one agent cannot declare agreement alone.
	WeightAgreement = 0.40
	// WeightOpenIssues weighs the number of open issues both agents still list.
	WeightOpenIssues = 0.20
	// WeightStability weighs how little the agents' positions still move between rounds.
	WeightStability = 0.15
	// WeightOverlap weighs the textual overlap of the two positions, a check on the agents'
	// own ratings that does not depend on what they say about themselves.
	WeightOverlap = 0.25
)

// issuePenalty is what each open issue takes off the open-issues component.
const issuePenalty = 20

// Score is how close the two agents are after a round, 0-100, with the breakdown it was
// computed from. Value is the sum of the components' Points, rounded to the nearest integer.
type Score struct {
	Value         int       `json:"value"`
	Breakdown     Breakdown `json:"breakdown"`
	MethodVersion string    `json:"methodVersion"`
}

// Breakdown holds the score's components.
type Breakdown struct {
	// Agreement: Input is the lower agreement rating (0-100); Value is Input. A reply that
	// did not parse rates 0.
	Agreement Component `json:"agreement"`
	// OpenIssues: Input is the number of open issues of both agents (a reply that did not
	// parse counts as one); Value is 100 - 20 per issue, at least 0.
	OpenIssues Component `json:"openIssues"`
	// Stability: Input is the larger movement of the two agents' positions since their
	// previous turn, 0 (unchanged) to 1 (entirely new) as 1 - similarity; Value is
	// 100·(1 - Input). In round one, and for a reply that did not parse, movement is 1.
	Stability Component `json:"stability"`
	// Overlap: Input is the similarity of the two positions, 0 to 1; Value is 100·Input.
	// Similarity is the Jaccard index of the sets of word bigrams (lower-cased, letters and
	// digits only) of the two texts: deterministic, pure Go, and insensitive to case and
	// punctuation.
	Overlap Component `json:"overlap"`
}

// Component is one part of a [Score].
type Component struct {
	// Weight is the component's share of the score; the weights sum to 1.
	Weight float64 `json:"weight"`
	// Input is the measurement the component is computed from, in its own unit.
	Input float64 `json:"input"`
	// Value is the component's sub-score, 0-100, rounded to two decimals.
	Value float64 `json:"value"`
	// Points is Weight·Value rounded to two decimals: the component's contribution to the
	// score.
	Points float64 `json:"points"`
}

// Components returns the four components in a fixed order.
func (b Breakdown) Components() []Component {
	return []Component{b.Agreement, b.OpenIssues, b.Stability, b.Overlap}
}

// scoreInput is what a round is scored from.
type scoreInput struct {
	minAgreement int
	openIssues   int
	movement     float64 // 0..1
	overlap      float64 // 0..1
}

// computeScore scores one round.
func computeScore(in scoreInput) Score {
	b := Breakdown{
		Agreement:  component(WeightAgreement, float64(in.minAgreement), float64(clamp(in.minAgreement, 0, 100))),
		OpenIssues: component(WeightOpenIssues, float64(in.openIssues), float64(clamp(100-issuePenalty*in.openIssues, 0, 100))),
		Stability:  component(WeightStability, round2(in.movement), 100*(1-clampF(in.movement))),
		Overlap:    component(WeightOverlap, round2(in.overlap), 100*clampF(in.overlap)),
	}
	var sum float64
	for _, c := range b.Components() {
		sum += c.Points
	}
	return Score{Value: clamp(int(math.Round(sum)), 0, 100), Breakdown: b, MethodVersion: MethodVersion}
}

// emptyScore is the score of a run in which no round completed: every component at 0.
func emptyScore() Score {
	return Score{
		Breakdown: Breakdown{
			Agreement:  Component{Weight: WeightAgreement},
			OpenIssues: Component{Weight: WeightOpenIssues},
			Stability:  Component{Weight: WeightStability, Input: 1},
			Overlap:    Component{Weight: WeightOverlap},
		},
		MethodVersion: MethodVersion,
	}
}

func component(weight, input, value float64) Component {
	value = round2(value)
	return Component{Weight: weight, Input: input, Value: value, Points: round2(weight * value)}
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func clamp(x, lo, hi int) int { return max(lo, min(hi, x)) }

func clampF(x float64) float64 { return math.Max(0, math.Min(1, x)) }
