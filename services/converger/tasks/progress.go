package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Progress is the data of a progress event (type events.TypeConvergeProgress), published on
// core NATS on events.ProgressSubject(taskID) while a task runs. Core NATS delivers at most
// once: a listener that must not miss anything reads the record (Store.Rounds, Store.Get)
// when it starts and whenever it may have missed a message.
type Progress struct {
	TaskID string       `json:"taskId"`
	Kind   ProgressKind `json:"kind"`
	// Status is the task's status: running for KindStarted, the end state for KindFinished.
	Status Status `json:"status,omitempty"`
	// Round is the RoundView of a KindRound event, exactly as the record stores it.
	Round json.RawMessage `json:"round,omitempty"`
}

// ProgressKind says what happened.
type ProgressKind string

// The progress kinds.
const (
	// KindStarted: a converger claimed the task (again, after a restart).
	KindStarted ProgressKind = "started"
	// KindRound: a round was scored and recorded.
	KindRound ProgressKind = "round"
	// KindFinished: the task finished and its result is recorded.
	KindFinished ProgressKind = "finished"
)

// progressSource is the CloudEvents source of progress events.
const progressSource = "convergence/converger"

// EncodeProgress wraps p in its CloudEvents envelope, ready to publish on
// events.ProgressSubject(p.TaskID).
func EncodeProgress(p Progress, requestID string) ([]byte, error) {
	env, err := events.NewEnvelope(progressSource, events.TypeConvergeProgress, p.TaskID, requestID, p)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// DecodeProgress reads a progress event.
func DecodeProgress(b []byte) (Progress, error) {
	env, err := events.Decode(b)
	if err != nil {
		return Progress{}, err
	}
	if env.Type != events.TypeConvergeProgress {
		return Progress{}, fmt.Errorf("event type %q is not a progress event", env.Type)
	}
	return events.DataAs[Progress](env)
}

// cancelPrefix starts the cancel subjects.
const cancelPrefix = "converge.cancel."

// CancelSubjects is the core-NATS subject filter every converger subscribes to for the cancel
// requests of the tasks it runs.
const CancelSubjects = cancelPrefix + "*"

// CancelSubject is the core-NATS subject on which a running task's cancellation is requested.
// The message has no body; the converger running the task cancels it, the others ignore it.
func CancelSubject(taskID string) string { return cancelPrefix + taskID }

// TaskOfCancelSubject returns the task ID a cancel subject names.
func TaskOfCancelSubject(subject string) (string, bool) {
	if len(subject) <= len(cancelPrefix) || subject[:len(cancelPrefix)] != cancelPrefix {
		return "", false
	}
	id := subject[len(cancelPrefix):]
	return id, ValidID(id)
}
