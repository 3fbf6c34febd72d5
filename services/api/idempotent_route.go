package api

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/periodic"
)

// idempotent is the Idempotency-Key of an operator's create that calls other services (spawn,
// key rotation, invoice create), where the key cannot be taken in the same transaction as what
// the request makes. The key is taken for the request's method and path first (a retry under
// it while the first runs is answered 409); the answer the handler writes is kept, sealed, and
// given to retries with the same body within the window, marked Idempotent-Replayed; the key
// with another body is 422. An answer that says to retry (5xx, 429) or an error the handler
// returns gives the key back, so a retry runs again. The request holds its key as a lease it
// renews while it runs, so a key whose request never answered (its replica stopped) is free
// again within claimLease.
//
// Answers may carry secrets (a new tenant's key), so each is kept sealed with AES-256-GCM under
// a key derived from the admin token, the request's method and path, and its Idempotency-Key:
// the database alone cannot open it.
func (s *Service) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Header.Get(idempotencyHeader) == "" {
			return next(c)
		}
		body, err := io.ReadAll(c.Request().Body) // bounded by bodyLimit
		if err != nil {
			return httpx.BadRequest("read the body: %v", err)
		}
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		// The body as JSON, with its keys sorted and its spacing gone, so that the same request
		// hashes the same; a body that is not JSON is hashed as it is (the handler refuses it).
		// The query is part of the request (?async=true).
		var v any = string(body)
		var parsed any
		if json.Unmarshal(body, &parsed) == nil {
			v = parsed
		}
		k, err := idempotencyOf(c, map[string]any{"body": v, "query": c.QueryString()})
		if err != nil {
			return err
		}
		operation := c.Request().Method + " " + c.Request().URL.Path
		ctx := c.Request().Context()
		var claim [16]byte
		for attempt := 0; ; attempt++ {
			if replayed, err := s.replayOperator(c, operation, k); replayed || err != nil {
				return err
			}
			claim, err = s.claimRoute(ctx, operation, k)
			if errors.Is(err, errIdempotencyKeyTaken) && attempt == 0 {
				continue // Taken meanwhile: its answer may be there now.
			}
			if errors.Is(err, errIdempotencyKeyTaken) {
				return &httpx.Error{Status: http.StatusConflict, Code: "idempotency_key_in_use", RetryAfter: 5 * time.Second,
					Message: fmt.Sprintf("a request under %s %q is still in progress; retry it shortly", idempotencyHeader, k.key)}
			}
			if err != nil {
				return err
			}
			break
		}
		tee := &teeWriter{ResponseWriter: c.Response().Writer}
		c.Response().Writer = tee
		// Stopped before the answer is kept, and deferred too: a handler that panics leaves
		// its key to lapse, not to be renewed for ever.
		stopRenewing := s.renewClaim(ctx, operation, k.key, claim, claimLease/4)
		defer stopRenewing()
		err = next(c)
		stopRenewing()
		status := c.Response().Status
		keepCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err != nil || status >= 500 || status == http.StatusTooManyRequests || !c.Response().Committed || tee.over {
			if _, derr := s.deps.Pool.Exec(keepCtx, `DELETE FROM operator_idempotency_keys WHERE operation = $1 AND key = $2 AND claim = $3`,
				operation, k.key, claim); derr != nil {
				s.logger.Warn("give back an idempotency key", "operation", operation, "err", derr)
			}
			return err
		}
		sealed, serr := json.Marshal(sealedAnswer{Sealed: s.answerSeal(operation, k.key).seal(tee.buf.Bytes())})
		if serr == nil {
			var tag pgconn.CommandTag
			tag, serr = s.deps.Pool.Exec(keepCtx, `
				UPDATE operator_idempotency_keys SET status = $3, answer = $4 WHERE operation = $1 AND key = $2 AND claim = $5`,
				operation, k.key, status, sealed, claim)
			if serr == nil && tag.RowsAffected() == 0 {
				s.logger.Warn("a retry took the idempotency key after this request's lease lapsed; its answer is not kept", "operation", operation)
			}
		}
		if serr != nil {
			s.logger.Warn("keep an idempotent answer; a retry will run again", "operation", operation, "err", serr)
		}
		return nil
	}
}

// claimLease is how long a key taken by a request stays taken without being renewed: the
// request renews it every claimLease/4 while it runs, so a request that never answered (its
// replica stopped) holds its key up to claimLease, however long requests may run. A request
// whose renewals all fail for that long (its database unreachable) may see its key taken by
// a retry.
const claimLease = time.Minute

// renewClaim renews the request's claim on operation's key every `every` until the returned
// function is called (once or more); the handler's end, not its client's, ends the renewals.
// A renewal under way when stop is called finishes first, so none lands after stop returns.
func (s *Service) renewClaim(ctx context.Context, operation, key string, claim [16]byte, every time.Duration) (stop func()) {
	base := context.WithoutCancel(ctx) // A renewal's own context: stopping lets it finish.
	ticking, stopTicking := context.WithCancel(base)
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Every(ticking, every, func() {
			rctx, cancel := context.WithTimeout(base, every)
			defer cancel()
			if _, err := s.deps.Pool.Exec(rctx, `
				UPDATE operator_idempotency_keys SET created_at = now() WHERE operation = $1 AND key = $2 AND status = 0 AND claim = $3`,
				operation, key, claim); err != nil {
				s.logger.Warn("renew the claim on an idempotency key", "operation", operation, "err", err)
			}
		})
	}()
	return func() {
		stopTicking()
		<-done
	}
}

// claimRoute takes key k for operation under a new claim, which it returns:
// errIdempotencyKeyTaken when a request has it.
func (s *Service) claimRoute(ctx context.Context, operation string, k *idempotency) (claim [16]byte, err error) {
	_, _ = rand.Read(claim[:]) // Never fails (crypto/rand).
	return claim, pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			DELETE FROM operator_idempotency_keys WHERE operation = $1 AND key = $2 AND status = 0 AND created_at <= now() - $3 * interval '1 second'`,
			operation, k.key, claimLease.Seconds()); err != nil {
			return fmt.Errorf("take back an abandoned idempotency key: %w", err)
		}
		return claimOperatorKey(ctx, tx, operation, k, &claim)
	})
}

// maxKeptAnswer bounds an answer kept for retries; a larger one is not kept.
const maxKeptAnswer = 1 << 20

// teeWriter passes an answer on and keeps a copy of it, up to maxKeptAnswer.
type teeWriter struct {
	http.ResponseWriter
	buf  bytes.Buffer
	over bool
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.buf.Len()+len(b) > maxKeptAnswer {
		t.over = true
	} else {
		t.buf.Write(b)
	}
	return t.ResponseWriter.Write(b)
}

// sealedAnswer is how a sealed answer is kept.
type sealedAnswer struct {
	Sealed []byte `json:"sealed"`
}

// answerSeal seals and opens the answers kept under one operation and key.
type answerSeal struct{ aead cipher.AEAD }

func (s *Service) answerSeal(operation, key string) answerSeal {
	mac := hmac.New(sha256.New, []byte(s.cfg.AdminToken))
	mac.Write([]byte("idempotent answer\x00" + operation + "\x00" + key))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return answerSeal{aead}
}

func (a answerSeal) seal(plain []byte) []byte {
	nonce := make([]byte, a.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return a.aead.Seal(nonce, nonce, plain, nil)
}

func (a answerSeal) open(sealed []byte) ([]byte, error) {
	n := a.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed answer too short")
	}
	return a.aead.Open(nil, sealed[:n], sealed[n:], nil)
}
