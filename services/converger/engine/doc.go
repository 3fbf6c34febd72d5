// Package engine runs the dual-agent convergence loop: two agents, each holding a role, take
// turns proposing and critiquing until they agree or a stop rule fires.
//
// # The loop
//
// A round is one turn of agent A and one of agent B. A proposes first; B critiques A's
// proposal and revises it; A answers B, and so on. Each turn is one provider call that
// returns structured JSON (proposal, agreement 0-100 with the other agent's latest proposal,
// open issues, concessions, confidence). After each round the engine scores it (see [Score])
// and checks the stop rules in this order:
//
//   - converged: at least MinRounds rounds, not a critique round, both replies parsed, the
//     score at least Config.ConvergeScore and the lower agreement at least
//     Config.ConvergeAgreement;
//   - stalemate: from round three, the score moved less than Config.StalemateDelta points
//     since the previous round;
//   - max_rounds: Task.MaxRounds rounds are done.
//
// Before every provider call the engine also stops with budget_exhausted when the tokens
// spent so far plus the call's projected cost (its estimated input plus its output cap) would
// exceed Task.TokenBudget, with timeout when Task.Timeout has passed, and with cancelled when
// the caller's context is cancelled.
//
// # Against empty agreement
//
// The engine never converges before round two. When B agrees in round one without raising a
// single issue or conceding anything, round two is a critique round: both agents are told to
// examine the other position critically, and that round cannot converge either. A reply that
// does not parse is asked for again once, with the parse error; when that fails too the turn
// is recorded as invalid, counts as agreement 0, and the round cannot converge.
//
// # Results
//
// When the agents converge, a synthesis call writes the final output from both final
// positions. When they do not, the output says so, shows both positions, and the result lists
// what remains in dispute. Usage is exact: every billed call is counted once, per agent, and
// calls that failed before being billed (rate limits, server errors) are not counted.
//
// # Persistence and resume
//
// Run reports every turn and every round to the callbacks in [Options] as soon as they
// complete, before it makes the next call, so a service can persist them and stream progress.
// A converger that restarts mid-task passes the persisted turns back in Options.Resume: Run
// rebuilds the rounds from them without calling the provider again and continues from the
// first missing turn.
package engine
