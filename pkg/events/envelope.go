package events

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// SpecVersion is the CloudEvents version of every envelope.
const SpecVersion = "1.0"

// Envelope is a CloudEvents 1.0 event in JSON structured mode. Its ID is also the message's
// Nats-Msg-Id header, so JetStream drops a duplicate publish inside the stream's window.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	// RequestID is the CloudEvents extension that carries the HTTP request ID that caused the
	// event, so one request can be followed through every service's logs.
	RequestID string `json:"requestid,omitempty"`
	// TraceParent and TraceState are the CloudEvents Distributed Tracing extension: the W3C
	// Trace Context of the span that caused the event, so its consumers' spans join that
	// span's trace (InjectTrace, TraceContext).
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// NewEnvelope wraps data as an event of type typ from source. subject is the CloudEvents
// subject: the entity the event is about, such as a tenant or task ID.
func NewEnvelope(source, typ, subject, requestID string, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	return Envelope{
		SpecVersion:     SpecVersion,
		ID:              NewID(),
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            time.Now().UTC(),
		DataContentType: "application/json",
		Data:            raw,
		RequestID:       requestID,
	}, nil
}

// Encode returns e as JSON, as json.Marshal does, but with Data copied as it is rather than
// checked and compacted once more, as json.Marshal does with any json.RawMessage: Data from
// NewEnvelope or Decode is valid JSON already, and a round's progress event, whose data holds
// the round's view, is encoded once per round of every running task.
func (e Envelope) Encode() ([]byte, error) {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	e.Data = json.RawMessage("0") // A placeholder the encoder cannot put anywhere else.
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	// Keys and string values are quoted with their inner quotes escaped, so the placeholder's
	// `"data":0` occurs once, as the data member.
	i := bytes.Index(b, []byte(`"data":0`)) + len(`"data":`)
	out := make([]byte, 0, len(b)+len(data))
	out = append(out, b[:i]...)
	out = append(out, data...)
	return append(out, b[i+1:]...), nil
}

// Validate reports what makes e unusable as an event.
func (e Envelope) Validate() error {
	switch {
	case e.SpecVersion != SpecVersion:
		return fmt.Errorf("specversion %q: want %q", e.SpecVersion, SpecVersion)
	case e.ID == "":
		return errors.New("event has no id")
	case e.Source == "":
		return errors.New("event has no source")
	case e.Type == "":
		return errors.New("event has no type")
	case len(e.Data) == 0:
		return errors.New("event has no data")
	}
	return nil
}

// Decode parses a JSON envelope and checks it.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, fmt.Errorf("invalid envelope: %w", err)
	}
	return e, nil
}

// DataAs decodes the envelope's data into a T.
func DataAs[T any](e Envelope) (T, error) {
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		return v, fmt.Errorf("decode %s data: %w", e.Type, err)
	}
	return v, nil
}

// NewID returns a 128-bit identifier in hex, used for event IDs: 48 bits of Unix milliseconds,
// then 80 random bits. IDs made later sort later, so a unique index on them (the outbox's, the
// metering ledger's) grows at its end instead of taking each key on a random page.
func NewID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16) // bytes 0-5
	_, _ = rand.Read(b[6:])                                               // crypto/rand.Read never returns an error since Go 1.24.
	return hex.EncodeToString(b[:])
}
