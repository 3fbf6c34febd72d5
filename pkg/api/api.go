// Package api is the HTTP contract of the platform: the OpenAPI 3.1 document (openapi.yaml)
// and the Go types generated from it (types.gen.go) that the server, the Go client and the
// operator's command line all use, so that no wire type is written twice.
//
// Change openapi.yaml, then run `make generate`; `make lint` fails when types.gen.go is stale.
package api

import _ "embed"

// Document is openapi.yaml as written.
//
//go:embed openapi.yaml
var Document []byte

//go:generate go tool oapi-codegen -config oapi-codegen.yaml -o types.gen.go openapi.yaml
