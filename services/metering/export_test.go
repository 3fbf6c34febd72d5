package metering

// SetAfterCommit makes s call fn after each committed batch, before acknowledging it; fn
// returning false skips the acknowledgements, as a process that died there would. Call it
// before Run.
func SetAfterCommit(s *Service, fn func(source string, eventIDs []string, deliveries []uint64) bool) {
	s.hooks.afterCommit = fn
}
