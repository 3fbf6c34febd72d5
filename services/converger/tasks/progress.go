package tasks

import (
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
)

// Progress is a task's progress event (events.ConvergeProgress) and its kinds.
type Progress = events.ConvergeProgress

// The progress kinds.
const (
	KindStarted  = events.ProgressStarted
	KindRound    = events.ProgressRound
	KindFinished = events.ProgressFinished
)

// EncodeProgress wraps p in its CloudEvents envelope from the converger, ready to publish on
// events.ProgressSubject(p.TaskID).
func EncodeProgress(p Progress, requestID string) ([]byte, error) {
	return events.EncodeProgress(SourceConverger, p, requestID)
}

// cancelPrefix starts the cancel subjects, events.SubjectConvergeCancel.
const cancelPrefix = "converge.cancel."

// CancelSubjects is the core-NATS subject filter every converger subscribes to for the cancel
// requests of the tasks it runs.
const CancelSubjects = events.SubjectConvergeCancel

// CancelSubject is the core-NATS subject on which a running task's cancellation is requested.
// The message has no body; the converger running the task cancels it, the others ignore it.
func CancelSubject(taskID string) string { return cancelPrefix + taskID }

// TaskOfCancelSubject returns the task ID a cancel subject names.
func TaskOfCancelSubject(subject string) (string, bool) {
	if len(subject) <= len(cancelPrefix) || subject[:len(cancelPrefix)] != cancelPrefix {
		return "", false
	}
	id := subject[len(cancelPrefix):]
	return id, taskspec.ValidID(id)
}
