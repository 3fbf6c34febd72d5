package engine

import "context"

// Options are per-run hooks and state.
//
// The callbacks run synchronously on Run's goroutine, so they see turns and rounds in order
// and never concurrently, and Run waits for them. They get a context that carries the values
// of Run's context but is not cancelled with it: a turn that was billed can still be persisted
// while its task is being cancelled or timing out. Bound their work yourself.
type Options struct {
	// Resume holds the turns already persisted for this task, in the order OnTurn delivered
	// them (A1, B1, A2, B2, ..., then the synthesis turn if there was one). Run rebuilds the
	// rounds from them without calling the provider again, then continues with the first
	// missing turn. Their usage counts toward the result and the token budget. Turns that do
	// not form that sequence make Run fail with ErrInvalidResume.
	Resume []Turn
	// OnTurn, when set, is called after each new turn (not resumed ones), including the
	// synthesis turn, before any further provider call. Persist the turn here to be able to
	// resume. An error stops the run: Run returns it, wrapped, with no further calls made.
	OnTurn func(ctx context.Context, turn Turn) error
	// OnRound, when set, is called after each new round is scored, before the stop rules are
	// checked and before any further provider call; use it to stream progress. An error stops
	// the run like OnTurn's.
	OnRound func(ctx context.Context, round Round) error
}
