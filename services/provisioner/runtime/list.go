package runtime

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
)

// List returns every container (in any state), network and volume carrying this runtime's
// labels, containers first, each group ordered by env id; for the reconciler. Objects whose id
// labels are missing or malformed are included with zero ids, for the reconciler to judge.
func (d *Docker) List(ctx context.Context) ([]Object, error) {
	f := d.labelFilters()
	containers, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	networks, err := d.cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	out := make([]Object, 0, len(containers)+len(networks))
	for _, c := range containers {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, object(KindContainer, c.ID, name, c.Labels, time.Unix(c.Created, 0), State(c.State)))
	}
	for _, n := range networks {
		out = append(out, object(KindNetwork, n.ID, n.Name, n.Labels, n.Created, ""))
	}
	volumes, err := d.cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range volumes.Volumes {
		created, _ := time.Parse(time.RFC3339, v.CreatedAt) // zero, and so old, when unreadable
		out = append(out, object(KindVolume, v.Name, v.Name, v.Labels, created, ""))
	}
	// The engine filters by the labels present; an object with another instance's label is
	// left out here (see managedBy).
	out = slices.DeleteFunc(out, func(o Object) bool { return !managedBy(o.Labels, d.cfg.Labels) })
	slices.SortStableFunc(out, func(a, b Object) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.EnvID, b.EnvID), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Owns reports whether o is named as tenant o.EnvID's container, network or secrets volume.
func (d *Docker) Owns(o Object) bool {
	return o.EnvID > 0 && (o.Name == d.ContainerName(o.EnvID) || o.Name == d.NetworkName(o.EnvID) || o.Name == d.VolumeName(o.EnvID))
}

func object(kind ObjectKind, id, name string, labels map[string]string, created time.Time, state State) Object {
	return Object{
		Kind:       kind,
		ID:         id,
		Name:       name,
		EnvID:      labelInt(labels, LabelEnvID),
		OrgID:      labelInt(labels, LabelOrgID),
		Generation: labelInt(labels, LabelGeneration),
		SpecHash:   labels[LabelSpecHash],
		State:      state,
		Labels:     labels,
		Created:    created.UTC(),
	}
}
