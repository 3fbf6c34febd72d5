// Package openapi loads the API's OpenAPI 3.1 document (pkg/api/openapi.yaml), which the API
// serves at /api-docs with an interactive page, and validates requests and answers against it:
// the tests run every call through a Validator.
package openapi

import (
	"context"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/convergence-dev/convergence/pkg/api"
)

var (
	loadOnce sync.Once
	doc      *openapi3.T
	docJSON  []byte
	loadErr  error
)

// Load parses the document and resolves its references, once. It does not validate it: the
// document is embedded, so Validate runs in the tests (and in NewValidator), not at every start.
func Load() (*openapi3.T, error) {
	loadOnce.Do(func() {
		loader := openapi3.NewLoader()
		d, err := loader.LoadFromData(api.Document)
		if err != nil {
			loadErr = fmt.Errorf("load openapi.yaml: %w", err)
			return
		}
		if docJSON, err = d.MarshalJSON(); err != nil {
			loadErr = fmt.Errorf("openapi.yaml as JSON: %w", err)
			return
		}
		doc = d
	})
	return doc, loadErr
}

// Validate checks the document against the OpenAPI specification, formats included.
func Validate() error {
	d, err := Load()
	if err != nil {
		return err
	}
	if err := d.Validate(context.Background(), openapi3.EnableSchemaFormatValidation()); err != nil {
		return fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return nil
}

// JSON is the document as JSON.
func JSON() ([]byte, error) {
	if _, err := Load(); err != nil {
		return nil, err
	}
	return docJSON, nil
}
