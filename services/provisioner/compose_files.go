package provisioner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// composeSuffix ends every tenant compose file name: <container name>.compose.yml.
const composeSuffix = ".compose.yml"

// ComposeFilePath returns where the provisioner keeps tenant envID's docker-compose file.
func (s *Service) ComposeFilePath(envID int64) string {
	return filepath.Join(s.composeDir(), s.rt.ContainerName(envID)+composeSuffix)
}

// composer is a runtime that describes a tenant as a docker-compose file ([runtime.Docker]).
type composer interface {
	ComposeFile(spec runtime.Spec) ([]byte, error)
}

// writeComposeFile writes the tenant's docker-compose file: the same container the runtime
// creates, runnable with `docker compose -f FILE up -d`. It holds the tenant's API key, so it
// is written with mode 0600, through a temporary file renamed into place, so a reader never
// sees half a file. A runtime without compose files (swarm) gets none, and an older one of the
// tenant's is removed, since it no longer describes what runs.
func (s *Service) writeComposeFile(spec runtime.Spec) error {
	c, ok := s.rt.(composer)
	if !ok {
		return s.removeComposeFile(spec.EnvID)
	}
	b, err := c.ComposeFile(spec)
	if err != nil {
		return err
	}
	path := s.ComposeFilePath(spec.EnvID)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".compose-*.tmp")
	if err != nil {
		return fmt.Errorf("write compose file: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // fails harmlessly after the rename
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write compose file %s: %w", path, err)
	}
	return nil
}

// removeComposeFile removes the tenant's compose file; a missing one is fine.
func (s *Service) removeComposeFile(envID int64) error {
	if err := os.Remove(s.ComposeFilePath(envID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove compose file: %w", err)
	}
	return nil
}

// composeFiles lists the env ids that have a compose file, with the files' modification
// times in Unix seconds.
func (s *Service) composeFiles() (map[int64]int64, error) {
	entries, err := os.ReadDir(s.composeDir())
	if err != nil {
		return nil, fmt.Errorf("list compose files: %w", err)
	}
	prefix := s.rt.ContainerName(0)
	prefix = prefix[:len(prefix)-1] // "<prefix>-env-"
	out := map[int64]int64{}
	for _, e := range entries {
		name := e.Name()
		idText, ok := strings.CutPrefix(strings.TrimSuffix(name, composeSuffix), prefix)
		if !ok || !strings.HasSuffix(name, composeSuffix) {
			continue
		}
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil || id <= 0 {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out[id] = info.ModTime().Unix()
	}
	return out, nil
}
