package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/pgerr"
)

// Idempotency-Key on a create: a tenant that retries a request with the same key and the same
// body within idempotencyWindow gets the task the first made, never a second run (nor a second
// bill). The same key with another body is refused with 422.

// idempotencyHeader names the header.
const idempotencyHeader = "Idempotency-Key"

// idempotencyWindow is how long a key is remembered (the queries say '24 hours').
const idempotencyWindow = 24 * time.Hour

// idempotency is a create's key, and the hash of what it asks for.
type idempotency struct {
	key  string
	hash []byte
}

// idempotencyOf reads the request's key, if it has one, and hashes v, the validated request
// (so two bodies that ask for the same thing, whatever their spacing, are the same).
func idempotencyOf(c echo.Context, v any) (*idempotency, error) {
	key := c.Request().Header.Get(idempotencyHeader)
	if key == "" {
		return nil, nil
	}
	if len(key) > 255 || !printableASCII(key) {
		return nil, httpx.BadRequest("%s: use 1 to 255 printable ASCII characters, such as a UUID", idempotencyHeader)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return &idempotency{key: key, hash: sum[:]}, nil
}

// reused is the answer to the key used again for another request.
func (k *idempotency) reused() error {
	return &httpx.Error{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused",
		Message: fmt.Sprintf("%s %q was used for another request in the last %s; use a new key for a new request", idempotencyHeader, k.key, idempotencyWindow)}
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// MarshalJSON makes validated hashable: its fields are unexported.
func (v validated) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Request any  `json:"request"`
		Async   bool `json:"async"`
	}{v.request, v.async})
}

// errIdempotencyKeyTaken means the key was recorded meanwhile by a concurrent request.
var errIdempotencyKeyTaken = errors.New("idempotency key taken")

// earlier is the task an earlier request with the key made: its id, and the status of its
// first answer (0 while that is not given yet).
type earlier struct {
	taskID string
	status int
}

// lookup finds the task an earlier request with the key made within the window, or nil. A
// key used with another body is refused.
func (h *convergeAPI) lookup(ctx context.Context, envID int64, k *idempotency) (*earlier, error) {
	var e earlier
	var hash []byte
	var status *int
	err := h.s.deps.Pool.QueryRow(ctx, `
		SELECT task_id, body_hash, status FROM idempotency_keys
		WHERE env_id = $1 AND key = $2 AND created_at > now() - interval '24 hours'`,
		envID, k.key).Scan(&e.taskID, &hash, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if string(hash) != string(k.hash) {
		return nil, k.reused()
	}
	if status != nil {
		e.status = *status
	}
	return &e, nil
}

// queueKey adds the key's record to b, the batch that records the task: both or neither. A key
// older than the window is replaced.
func queueKey(b *pgx.Batch, envID int64, taskID string, k *idempotency) {
	b.Queue(`DELETE FROM idempotency_keys WHERE env_id = $1 AND key = $2 AND created_at <= now() - interval '24 hours'`,
		envID, k.key)
	b.Queue(`INSERT INTO idempotency_keys (env_id, key, body_hash, task_id) VALUES ($1, $2, $3, $4)`,
		envID, k.key, k.hash, taskID)
}

// answered keeps the status of the first answer given under the key.
func (h *convergeAPI) answered(ctx context.Context, envID int64, k *idempotency, status int) {
	if k == nil {
		return
	}
	if _, err := h.s.deps.Pool.Exec(context.WithoutCancel(ctx), `
		UPDATE idempotency_keys SET status = $3 WHERE env_id = $1 AND key = $2 AND status IS NULL`,
		envID, k.key, status); err != nil {
		h.s.logger.Warn("keep an idempotent answer's status", "envId", envID, "err", err)
	}
}

// forgetKeys removes the keys older than the window, every hour until ctx is done.
func (s *Service) forgetKeys(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		for _, table := range []string{"idempotency_keys", "operator_idempotency_keys"} {
			if _, err := s.deps.Pool.Exec(ctx, `DELETE FROM `+table+` WHERE created_at <= now() - interval '24 hours'`); err != nil && ctx.Err() == nil {
				s.logger.Warn("forget old idempotency keys", "table", table, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// An operator's create under an Idempotency-Key keeps its first answer (keepOperatorAnswer) beside
// what it made, in one transaction; a retry with the key and the same request gets that answer
// again (replayOperator), marked Idempotent-Replayed, and the key with another request is 422.

// replayOperator answers a request of operation under key k with the first answer given under
// it within the window, and reports whether it did.
func (s *Service) replayOperator(c echo.Context, operation string, k *idempotency) (bool, error) {
	var hash, answer []byte
	var status int
	err := s.deps.Pool.QueryRow(c.Request().Context(), `
		SELECT body_hash, status, answer FROM operator_idempotency_keys
		WHERE operation = $1 AND key = $2 AND created_at > now() - interval '24 hours'`,
		operation, k.key).Scan(&hash, &status, &answer)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read idempotency key: %w", err)
	}
	if string(hash) != string(k.hash) {
		return false, k.reused()
	}
	if status == 0 {
		return false, nil // taken by a request still running (idempotent)
	}
	var sealed sealedAnswer
	if json.Unmarshal(answer, &sealed) == nil && sealed.Sealed != nil {
		if answer, err = s.answerSeal(operation, k.key).open(sealed.Sealed); err != nil {
			return false, fmt.Errorf("open the kept answer: %w", err)
		}
	}
	c.Response().Header().Set("Idempotent-Replayed", "true")
	return true, c.JSONBlob(status, answer)
}

// claimOperatorKey takes key k for a request of operation in tx, before the request makes
// anything: a concurrent request under the same key waits for tx, then fails here with
// errIdempotencyKeyTaken, and answers with what tx kept (keepOperatorAnswer). A key older than
// the window is replaced. claim, when not nil, marks the key as held by one request as a
// lease (see Service.idempotent).
func claimOperatorKey(ctx context.Context, tx pgx.Tx, operation string, k *idempotency, claim *[16]byte) error {
	if _, err := tx.Exec(ctx, `
		DELETE FROM operator_idempotency_keys WHERE operation = $1 AND key = $2 AND created_at <= now() - interval '24 hours'`,
		operation, k.key); err != nil {
		return fmt.Errorf("replace an old idempotency key: %w", err)
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO operator_idempotency_keys (operation, key, body_hash, status, answer, claim) VALUES ($1, $2, $3, 0, 'null', $4)`,
		operation, k.key, k.hash, claim)
	if pgerr.IsUniqueViolation(err, "operator_idempotency_keys_pkey") {
		return errIdempotencyKeyTaken
	}
	if err != nil {
		return fmt.Errorf("take the idempotency key: %w", err)
	}
	return nil
}

// keepOperatorAnswer keeps, in tx, the answer given under key k: its status and body.
func keepOperatorAnswer(ctx context.Context, tx pgx.Tx, operation string, k *idempotency, status int, body any) error {
	answer, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE operator_idempotency_keys SET status = $3, answer = $4 WHERE operation = $1 AND key = $2`,
		operation, k.key, status, answer); err != nil {
		return fmt.Errorf("keep the idempotent answer: %w", err)
	}
	return nil
}
