package events

import (
	"embed"
	"io/fs"
)

//go:embed schemas/*.json
var schemaFiles embed.FS

// Schemas returns the JSON Schemas (draft 2020-12) of the event contract: envelope.json for the
// CloudEvents envelope, and <type>.json for the data of each event type, such as
// dev.convergence.tenant.lifecycle.v1.json. The tests check real payloads against them.
func Schemas() fs.FS {
	sub, _ := fs.Sub(schemaFiles, "schemas") // "schemas" is a valid path: this cannot fail.
	return sub
}

// SchemaName is the file of Schemas that describes the data of events of type typ.
func SchemaName(typ string) string { return typ + ".json" }

// Types lists every event type.
func Types() []string {
	return []string{TypeTenantSpawn, TypeTenantDestroy, TypeTenantLifecycle, TypeConvergeRequest,
		TypeConvergeCompleted, TypeConvergeFailed, TypeConvergeProgress, TypeTenantKeyIssued, TypeBudgetThreshold, TypeUsageRecorded}
}
