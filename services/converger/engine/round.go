package engine

// Round is one turn of each agent and the score of where they stand after it.
type Round struct {
	Number int `json:"number"`
	// Critique marks a round forced by empty agreement in round one; it cannot converge.
	Critique bool  `json:"critique"`
	A        Turn  `json:"a"`
	B        Turn  `json:"b"`
	Score    Score `json:"score"`
}

// Turns returns the round's turns in the order they were taken, the order Options.Resume
// wants them.
func (r Round) Turns() []Turn { return []Turn{r.A, r.B} }
