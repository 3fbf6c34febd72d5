// Package eventstest checks events against the contract's JSON Schemas (events.Schemas): the
// platform's tests run it on the payloads its services publish, and an integrator's tests may
// run it on theirs.
package eventstest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Validator checks events. It is safe for concurrent use.
type Validator struct {
	envelope *jsonschema.Schema
	data     map[string]*jsonschema.Schema // by event type
}

// NewValidator compiles the schemas of every event type.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	compile := func(name string) (*jsonschema.Schema, error) {
		raw, err := fs.ReadFile(events.Schemas(), name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if err := c.AddResource(name, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		return c.Compile(name)
	}
	env, err := compile("envelope.json")
	if err != nil {
		return nil, err
	}
	v := &Validator{envelope: env, data: map[string]*jsonschema.Schema{}}
	for _, typ := range events.Types() {
		if v.data[typ], err = compile(events.SchemaName(typ)); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Validate checks a whole event: its envelope, and its data against the schema of its type.
func (v *Validator) Validate(event []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(event))
	if err != nil {
		return fmt.Errorf("event is not JSON: %w", err)
	}
	if err := v.envelope.Validate(inst); err != nil {
		return fmt.Errorf("envelope: %w", err)
	}
	env, err := events.Decode(event)
	if err != nil {
		return err
	}
	return v.ValidateData(env.Type, env.Data)
}

// ValidateData checks the data of an event of type typ.
func (v *Validator) ValidateData(typ string, data []byte) error {
	s, ok := v.data[typ]
	if !ok {
		return errors.New("no schema for event type " + typ)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s data is not JSON: %w", typ, err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%s data: %w", typ, err)
	}
	return nil
}
