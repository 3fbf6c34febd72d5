package events

import (
	"encoding/json"
	"fmt"
)

// ConvergeProgress is the data of a progress event (type TypeConvergeProgress), published on
// core NATS on ProgressSubject(TaskID) while a task runs. Core NATS delivers at most once: a
// listener that must not miss anything asks the converger for the task's record
// (SubjectTaskGet) when it starts and whenever it may have missed a message.
type ConvergeProgress struct {
	TaskID string       `json:"taskId"`
	Kind   ProgressKind `json:"kind"`
	// Status is the task's status: running for ProgressStarted, the end state for
	// ProgressFinished.
	Status string `json:"status,omitempty"`
	// Round is the round as the API shows it, for ProgressRound.
	Round json.RawMessage `json:"round,omitempty"`
}

// ProgressKind says what happened.
type ProgressKind string

// The progress kinds.
const (
	// ProgressStarted: a converger claimed the task (again, after a restart).
	ProgressStarted ProgressKind = "started"
	// ProgressRound: a round was scored and recorded.
	ProgressRound ProgressKind = "round"
	// ProgressFinished: the task finished and its result is recorded.
	ProgressFinished ProgressKind = "finished"
)

// EncodeProgress wraps p from source in its CloudEvents envelope, ready to publish on
// ProgressSubject(p.TaskID). p.Round must be valid JSON, as json.Marshal makes it: it goes
// into the event as it is, where json.Marshal would check and compact it once more, for every
// round of every running task.
func EncodeProgress(source string, p ConvergeProgress, requestID string) ([]byte, error) {
	round := p.Round
	p.Round = nil
	env, err := NewEnvelope(source, TypeConvergeProgress, p.TaskID, requestID, p)
	if err != nil {
		return nil, err
	}
	if len(round) > 0 {
		// Data is an object ending in '}': the round goes in as its last member. The capacity
		// limit makes append copy Data rather than write past it.
		d := env.Data[: len(env.Data)-1 : len(env.Data)-1]
		env.Data = append(append(append(d, `,"round":`...), round...), '}')
	}
	return env.Encode()
}

// DecodeProgress reads a progress event.
func DecodeProgress(b []byte) (ConvergeProgress, error) {
	env, err := Decode(b)
	if err != nil {
		return ConvergeProgress{}, err
	}
	if env.Type != TypeConvergeProgress {
		return ConvergeProgress{}, fmt.Errorf("event type %q is not a progress event", env.Type)
	}
	return DataAs[ConvergeProgress](env)
}
