package provisioner

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergence-dev/convergence/pkg/events"
)

// destroy removes tenant t: its container gets DestroyGrace to exit after SIGTERM, its last
// logs are archived, container and network are removed, and only then are its compose file
// and port released and the tenant marked destroyed, with the fact published. Repeating it on
// a destroyed tenant removes anything left and changes nothing else. The caller holds the
// tenant's lock.
func (s *Service) destroy(ctx context.Context, t tenant, requestID string) error {
	removal, err := s.rt.Remove(ctx, t.ID, s.cfg.DestroyGrace)
	if err != nil {
		return fmt.Errorf("destroy tenant %d: %w", t.ID, err)
	}
	if err := s.removeComposeFile(t.ID); err != nil {
		return err
	}
	c := change{to: events.StateDestroyed, releasePort: true, requestID: requestID}
	if removal.Existed {
		c.archive = &archive{cause: "destroyed", exitCode: removal.ExitCode, logs: removal.LastLogs}
	}
	// Another replica's health check may move the row between the read and the update; read
	// it again and retry then.
	for range 3 {
		err = s.apply(ctx, t, c)
		if !errors.Is(err, errStale) {
			return err
		}
		if t, err = s.loadTenant(ctx, t.ID); err != nil {
			return err
		}
	}
	return fmt.Errorf("destroy tenant %d: %w", t.ID, err)
}
