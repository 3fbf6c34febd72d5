package natsrpc_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sum struct{ A, B int }

func serve(t *testing.T, srv *natstest.Server, fn func(context.Context, sum) (int, error)) {
	t.Helper()
	s := natsrpc.NewServer(srv.Connect(), "adders", slog.New(slog.DiscardHandler))
	natsrpc.Handle(s, "test.add", time.Second, fn)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	nc := srv.Connect()
	require.Eventually(t, func() bool {
		_, err := natsrpc.Call[sum, int](t.Context(), nc, "test.add", sum{})
		return !errors.Is(err, natsrpc.ErrUnavailable)
	}, 5*time.Second, 10*time.Millisecond)
}

func TestCall_Answered_ResultAndErrorsTravel(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	serve(t, srv, func(_ context.Context, s sum) (int, error) {
		switch {
		case s.A < 0:
			return 0, natsrpc.Errorf(natsrpc.CodeInvalid, "a is %d; use a number from 0", s.A)
		case s.A == 13:
			return 0, errors.New("the database said something secret")
		}
		return s.A + s.B, nil
	})
	nc := srv.Connect()

	got, err := natsrpc.Call[sum, int](t.Context(), nc, "test.add", sum{2, 3})
	require.NoError(t, err)
	require.Equal(t, 5, got)

	_, err = natsrpc.Call[sum, int](t.Context(), nc, "test.add", sum{-1, 3})
	require.True(t, natsrpc.IsCode(err, natsrpc.CodeInvalid))
	require.ErrorContains(t, err, "a is -1; use a number from 0")

	_, err = natsrpc.Call[sum, int](t.Context(), nc, "test.add", sum{13, 0})
	require.True(t, natsrpc.IsCode(err, natsrpc.CodeInternal))
	require.NotContains(t, err.Error(), "secret", "a handler's own error stays in its log")

	_, err = natsrpc.Call[string, int](t.Context(), nc, "test.add", "not a sum")
	require.True(t, natsrpc.IsCode(err, natsrpc.CodeInvalid))
}

func TestCall_NobodyServes_Unavailable(t *testing.T) {
	t.Parallel()
	nc := natstest.Start(t).Connect()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := natsrpc.Call[sum, int](ctx, nc, "test.nobody", sum{1, 1})
	require.ErrorIs(t, err, natsrpc.ErrUnavailable)
}
