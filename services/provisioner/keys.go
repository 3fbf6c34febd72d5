package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// Key delivery: how long a KeyDelivery waits for the tenant's lock (a spawn may hold it), and
// how long a rotated key may wait for its KeyDelivery before the health watcher delivers it.
const (
	deliveryLockWait = 5 * time.Second
	deliveryGrace    = 30 * time.Second
)

// rotateKey gives tenant r.EnvID a new API key: in one transaction it seals the key to the
// provisioners' keys in place of the old one, marks it waiting for delivery, and writes the
// tenant.key.issued fact. The container keeps its old key until a KeyDelivery (deliverKey),
// since the asker must first accept the new one.
func (s *Service) rotateKey(ctx context.Context, r events.KeyRotation) (events.KeyRotated, error) {
	if r.EnvID <= 0 || len(r.ReplyKey) == 0 {
		return events.KeyRotated{}, natsrpc.Errorf(natsrpc.CodeInvalid, "a key rotation names a tenant and a reply key")
	}
	key, digest := apikey.New()
	sealed, err := apikey.SealTo(r.ReplyKey, r.EnvID, key)
	if err != nil {
		return events.KeyRotated{}, natsrpc.Errorf(natsrpc.CodeInvalid, "%v", err)
	}
	issued := events.TenantKeyIssued{EnvID: r.EnvID, KeyDigest: digest, KeyPrefix: apikey.Display(key), IssuedAt: time.Now().UTC()}
	err = s.deps.Outbox.Tx(ctx, func(tx pgx.Tx) error {
		var status, desired string
		err := tx.QueryRow(ctx, `SELECT org_id, name, status, desired_status FROM environments WHERE id = $1 FOR UPDATE`, r.EnvID).
			Scan(&issued.OrgID, &issued.Name, &status, &desired)
		if errors.Is(err, pgx.ErrNoRows) {
			return natsrpc.Errorf(natsrpc.CodeNotFound, "tenant %d", r.EnvID)
		}
		if err != nil {
			return fmt.Errorf("read tenant: %w", err)
		}
		if status == string(events.StateDestroyed) || desired == desiredDestroyed {
			return natsrpc.Errorf(natsrpc.CodeConflict, "tenant %d is destroyed or being destroyed; it gets no new key", r.EnvID)
		}
		if err := keyring.Seal(ctx, tx, r.EnvID, key); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE environments SET api_key_hash = $2, api_key_prefix = $3, key_pending_since = now() WHERE id = $1`,
			r.EnvID, digest, issued.KeyPrefix); err != nil {
			return fmt.Errorf("record the new key: %w", err)
		}
		return writeEvent(ctx, tx, events.KeyIssuedSubject(r.EnvID), events.TypeTenantKeyIssued, r.EnvID, r.RequestID, issued)
	})
	if err != nil {
		return events.KeyRotated{}, err
	}
	s.log.InfoContext(ctx, "tenant key rotated", "envId", r.EnvID, "apiKey", issued.KeyPrefix, "request_id", r.RequestID)
	return events.KeyRotated{Key: issued, SealedKey: sealed}, nil
}

// deliverKeyNow answers a KeyDelivery. A tenant busy with a spawn that does not end soon is
// answered not delivered, and left to the health watcher (observe), which delivers keys that
// waited longer than deliveryGrace.
func (s *Service) deliverKeyNow(ctx context.Context, r events.KeyDelivery) (events.KeyDelivered, error) {
	lctx, cancel := context.WithTimeout(ctx, deliveryLockWait)
	defer cancel()
	unlock, err := s.locks.lock(lctx, r.EnvID, nil)
	if err != nil {
		return events.KeyDelivered{}, nil //nolint:nilerr // Busy is an answer: not delivered now.
	}
	defer unlock()
	t, err := s.loadTenant(ctx, r.EnvID)
	if isNotFound(err) {
		return events.KeyDelivered{}, natsrpc.Errorf(natsrpc.CodeNotFound, "tenant %d", r.EnvID)
	}
	if err != nil {
		return events.KeyDelivered{}, err
	}
	delivered, err := s.deliverKey(ctx, t)
	return events.KeyDelivered{Delivered: delivered}, err
}

// deliverKey puts tenant t's newest key into its container, which goes on running and whose app
// reads the key file again (pkg/client does), and clears the wait unless a newer rotation came
// meanwhile. It reports false when there is no container: one made later starts with the newest
// key. The caller holds the tenant's lock.
func (s *Service) deliverKey(ctx context.Context, t tenant) (bool, error) {
	key, err := s.keys.OpenFor(ctx, s.deps.Pool, t.ID)
	if err != nil {
		return false, err
	}
	err = s.rt.PutSecrets(ctx, t.ID, map[string]string{apiKeyFile: key})
	delivered := err == nil
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return false, fmt.Errorf("deliver tenant %d's key: %w", t.ID, err)
	}
	if t.KeyPendingSince != nil {
		if _, err := s.deps.Pool.Exec(ctx, `
			UPDATE environments SET key_pending_since = NULL WHERE id = $1 AND key_pending_since <= $2`,
			t.ID, *t.KeyPendingSince); err != nil {
			return delivered, fmt.Errorf("record tenant %d's key delivered: %w", t.ID, err)
		}
	}
	if delivered {
		s.log.InfoContext(ctx, "tenant key delivered to its container", "envId", t.ID, "apiKey", apikey.Display(key))
	}
	return delivered, nil
}
