package runtime

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
)

// ensureSecrets makes a Swarm secret for each of secrets that has none yet, labelled with
// labels, and returns the references the service mounts them by (in SecretsDir, owned by the
// tenant's user, mode 0400): keep's references with those of secrets in place of the files of
// the same names. created lists the ids of the secrets this call made, for the caller to
// remove when what follows fails.
func (s *Swarm) ensureSecrets(ctx context.Context, envID int64, labels map[string]string, keep []*swarm.SecretReference, secrets map[string]string) (refs []*swarm.SecretReference, created []string, err error) {
	uid, gid, err := userIDs(s.cfg.User)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range keep {
		if _, replaced := secrets[fileOf(r)]; !replaced {
			refs = append(refs, r)
		}
	}
	for _, file := range slices.Sorted(maps.Keys(secrets)) {
		name := s.secretName(envID, file, secrets[file])
		id, made, err := s.ensureSecret(ctx, name, file, secrets[file], labels)
		if err != nil {
			return nil, created, err
		}
		if made {
			created = append(created, id)
		}
		refs = append(refs, &swarm.SecretReference{
			SecretID:   id,
			SecretName: name,
			File:       &swarm.SecretReferenceFileTarget{Name: file, UID: strconv.Itoa(uid), GID: strconv.Itoa(gid), Mode: 0o400},
		})
	}
	return refs, created, nil
}

// fileOf returns the file name a secret reference mounts.
func fileOf(r *swarm.SecretReference) string {
	if r.File == nil {
		return ""
	}
	return r.File.Name
}

// ensureSecret returns the id of the managed secret name, creating it with value when it
// does not exist. made is true when this call created it.
func (s *Swarm) ensureSecret(ctx context.Context, name, file, value string, labels map[string]string) (id string, made bool, err error) {
	l := maps.Clone(labels)
	l[LabelSecretFile] = file
	resp, err := s.cli.SecretCreate(ctx, swarm.SecretSpec{Annotations: swarm.Annotations{Name: name, Labels: l}, Data: []byte(value)})
	if err == nil {
		return resp.ID, true, nil
	}
	if !isConflict(err) && !strings.Contains(err.Error(), "already exists") {
		return "", false, fmt.Errorf("create secret %s: %w", name, err)
	}
	// The same value under the same file name: its name is a digest of both.
	list, lerr := s.cli.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if lerr != nil {
		return "", false, fmt.Errorf("find secret %s: %w", name, lerr)
	}
	for _, sec := range list {
		if sec.Spec.Name == name {
			if !managedBy(sec.Spec.Labels, s.cfg.Labels) {
				return "", false, fmt.Errorf("secret %s: %w", name, ErrNotManaged)
			}
			return sec.ID, false, nil
		}
	}
	return "", false, fmt.Errorf("create secret %s: %w", name, err)
}

// PutSecrets puts secrets in place of the tenant's secret files of the same names. A Swarm
// secret cannot change and a service's secrets change only by an update, so unlike
// [Docker.PutSecrets] this replaces the tenant's task: its app restarts with the new files (a
// start-first update through the routing mesh, so the old task answers until the new one is
// healthy; stop-first when ports are published on the host). The secrets no longer used are
// removed. It wraps [ErrNotFound] when the tenant has no service.
func (s *Swarm) PutSecrets(ctx context.Context, envID int64, secrets map[string]string) error {
	svc, err := s.inspectService(ctx, envID)
	if err != nil {
		return err
	}
	labels := maps.Clone(svc.Spec.Labels)
	delete(labels, LabelImage)
	cs := svc.Spec.TaskTemplate.ContainerSpec
	refs, created, err := s.ensureSecrets(ctx, envID, labels, cs.Secrets, secrets)
	if err != nil {
		return fmt.Errorf("service %s: %w", svc.Spec.Name, err)
	}
	if sameSecrets(cs.Secrets, refs) {
		return nil
	}
	spec := svc.Spec
	newCS := *cs
	newCS.Secrets = refs
	spec.TaskTemplate.ContainerSpec = &newCS
	if _, err := s.cli.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
		for _, id := range created {
			_ = s.cli.SecretRemove(context.WithoutCancel(ctx), id)
		}
		return fmt.Errorf("update secrets of service %s: %w", svc.Spec.Name, err)
	}
	for _, old := range cs.Secrets {
		if !slices.ContainsFunc(refs, func(r *swarm.SecretReference) bool { return r.SecretID == old.SecretID }) {
			if err := s.cli.SecretRemove(ctx, old.SecretID); err != nil && !isNotFound(err) {
				s.log.Warn("remove a replaced secret", "envId", envID, "secret", old.SecretName, "err", err)
			}
		}
	}
	return nil
}

// sameSecrets reports whether two lists reference the same secrets.
func sameSecrets(a, b []*swarm.SecretReference) bool {
	ids := func(refs []*swarm.SecretReference) []string {
		out := make([]string, 0, len(refs))
		for _, r := range refs {
			out = append(out, r.SecretID)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(ids(a), ids(b))
}
