package runtime

import (
	"maps"
	"strconv"
)

// Labels the runtime puts on every container and network it creates. Only objects labelled
// LabelManaged=true are ever listed, watched, changed or removed.
const (
	LabelManaged    = "convergence.managed"
	LabelEnvID      = "convergence.env_id"
	LabelOrgID      = "convergence.org_id"
	LabelName       = "convergence.name"
	LabelGeneration = "convergence.generation"
	LabelSpecHash   = "convergence.spec_hash"
	// LabelInstance names the installation whose runtime made the object (DockerConfig.Instance).
	LabelInstance = "convergence.instance"
)

// specLabels returns the labels for a tenant's objects: the convergence.* labels of the spec
// (with defaults applied) and its hash, plus the runtime's extra labels.
func specLabels(s Spec, hash string, extra map[string]string) map[string]string {
	l := make(map[string]string, 6+len(extra))
	maps.Copy(l, extra)
	l[LabelManaged] = "true"
	l[LabelEnvID] = strconv.FormatInt(s.EnvID, 10)
	l[LabelOrgID] = strconv.FormatInt(s.OrgID, 10)
	l[LabelName] = s.Name
	l[LabelGeneration] = strconv.FormatInt(s.Generation, 10)
	l[LabelSpecHash] = hash
	return l
}

// managedBy reports whether labels mark an object as created by a runtime with these extra
// labels: LabelManaged=true and every extra label with its value (LabelInstance among them, or
// absent from both).
func managedBy(labels, extra map[string]string) bool {
	if labels[LabelManaged] != "true" {
		return false
	}
	// A runtime without an instance (an installation from before instance ids) owns only
	// objects without one.
	if _, ok := extra[LabelInstance]; !ok && labels[LabelInstance] != "" {
		return false
	}
	for k, v := range extra {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// labelInt reads an integer label; a missing or malformed one reads as zero.
func labelInt(labels map[string]string, key string) int64 {
	n, err := strconv.ParseInt(labels[key], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
