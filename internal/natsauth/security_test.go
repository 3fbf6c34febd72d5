package natsauth_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/pkg/events"
)

// These tests play an attacker who holds one of the platform's NATS identities, or none,
// against a real server; each refusal is checked where it matters (the stream did not change,
// the consumer is still there), not only by the error the client saw.

// refusalWait bounds how long a refused JetStream request waits: the server drops a publish
// it refuses, so the client learns of it only when its wait for the answer ends.
const refusalWait = 2 * time.Second

func TestSecurity_AnonymousConnect_Refused(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	srv.ExpectRefusals()
	_, err := nats.Connect(srv.URL())
	require.ErrorContains(t, err, "Authorization Violation")
}

func TestSecurity_UserOfAnotherAuthority_Refused(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	srv.ExpectRefusals()
	other, err := natsauth.LoadOrCreate(t.TempDir())
	require.NoError(t, err)
	opts, err := other.Connect(natsauth.Admin, "intruder")
	require.NoError(t, err)
	_, err = nats.Connect(srv.URL(), opts...)
	require.ErrorContains(t, err, "Authorization Violation")
}

func TestSecurity_RevokedUser_CutOffWithinSeconds_AndRefusedAfterARestart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	dir := t.TempDir()
	issue := func(name string) string {
		creds, err := srv.Auth.Creds(natsauth.Integrator, name, 0)
		require.NoError(t, err)
		path := filepath.Join(dir, name+".creds")
		require.NoError(t, os.WriteFile(path, creds, 0o600))
		return path
	}
	leaked, kept := issue("leaked"), issue("kept")
	leakedConn, err := nats.Connect(srv.URL(), nats.UserCredentials(leaked), nats.NoReconnect())
	require.NoError(t, err)
	defer leakedConn.Close()
	keptConn, err := nats.Connect(srv.URL(), nats.UserCredentials(kept), nats.NoReconnect())
	require.NoError(t, err)
	defer keptConn.Close()

	user, name, err := natsauth.UserOf(leaked)
	require.NoError(t, err)
	require.Equal(t, "leaked", name)
	require.NoError(t, srv.Auth.Revoke(user))
	require.ErrorContains(t, srv.Auth.Revoke("not-a-key"), "public key")

	// The running server closes the revoked user's connection and refuses it anew.
	require.Eventually(t, leakedConn.IsClosed, 10*time.Second, 50*time.Millisecond, "the revoked user's connection is closed")
	_, err = nats.Connect(srv.URL(), nats.UserCredentials(leaked))
	require.ErrorContains(t, err, "Authorization Violation", "the revoked user is refused")
	require.True(t, keptConn.IsConnected(), "another integrator stays connected")
	keptConn.Close()

	srv.Restart()
	_, err = nats.Connect(srv.URL(), nats.UserCredentials(leaked))
	require.ErrorContains(t, err, "Authorization Violation", "still refused after a restart")
	nc, err := nats.Connect(srv.URL(), nats.UserCredentials(kept))
	require.NoError(t, err, "another integrator is not")
	nc.Close()
}

func TestSecurity_ServiceUsers_MayNotPublishOutsideTheirSubjects(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	srv.ExpectRefusals()
	admin := srv.JetStream()
	cases := []struct {
		role    natsauth.Role
		subject string
	}{
		// A forged result: usage that metering would bill.
		{natsauth.API, events.SubjectConvergeCompleted},
		{natsauth.Metering, events.SubjectConvergeCompleted},
		{natsauth.Provisioner, events.SubjectConvergeFailed},
		{natsauth.Integrator, events.SubjectConvergeCompleted},
		// A spawn past the provisioner's admission (and the organization's tenant quota).
		{natsauth.API, events.SubjectTenantSpawn},
		// Commands only the API gives.
		{natsauth.Converger, events.SubjectTenantDestroy},
		{natsauth.Provisioner, events.SubjectConvergeRequest},
		{natsauth.Integrator, events.SubjectTenantDestroy},
		// Facts only the provisioner states.
		{natsauth.API, events.LifecycleSubject(events.StateDestroyed, 1)},
		{natsauth.Converger, events.KeyIssuedSubject(1)},
		// Another consumer's dead letters: the converger fails the tasks of its own.
		{natsauth.API, events.DeadLetterSubject(events.ConsumerConverger)},
	}
	for _, c := range cases {
		t.Run(string(c.role)+" "+c.subject, func(t *testing.T) {
			t.Parallel()
			stream, ok := events.StreamFor(c.subject)
			require.True(t, ok)
			before := lastSeq(t, admin, stream)
			js := srv.JetStreamAs(c.role)
			ctx, cancel := context.WithTimeout(t.Context(), refusalWait)
			defer cancel()
			_, err := js.Publish(ctx, c.subject, []byte(`{"forged":true}`))
			require.Error(t, err, "the publish is refused")
			require.Equal(t, before, lastSeq(t, admin, stream), "nothing reached %s", stream)
		})
	}
}

func TestSecurity_ServiceUsers_MayNotTouchAnotherServicesConsumerOrTheStreams(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	srv.ExpectRefusals()
	admin := srv.JetStream()
	ctx := t.Context()
	_, err := admin.CreateOrUpdateConsumer(ctx, events.StreamConvergeResults, jetstream.ConsumerConfig{
		Durable: events.ConsumerMeteringResults, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)

	api := srv.JetStreamAs(natsauth.API)
	rctx, cancel := context.WithTimeout(ctx, refusalWait)
	defer cancel()
	require.Error(t, api.DeleteConsumer(rctx, events.StreamConvergeResults, events.ConsumerMeteringResults), "the API may not delete metering's consumer")
	_, err = admin.Consumer(ctx, events.StreamConvergeResults, events.ConsumerMeteringResults)
	require.NoError(t, err, "metering's consumer is still there")

	for _, role := range []natsauth.Role{natsauth.API, natsauth.Provisioner, natsauth.Converger, natsauth.Metering} {
		js := srv.JetStreamAs(role)
		rctx, cancel := context.WithTimeout(ctx, refusalWait)
		require.Error(t, js.DeleteStream(rctx, events.StreamTenantLifecycle), "%s may not delete a stream", role)
		cancel()
	}
	_, err = admin.Stream(ctx, events.StreamTenantLifecycle)
	require.NoError(t, err, "the stream is still there")
}

func TestSecurity_Integrator_ReadsFactsAndNothingElse(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	srv.ExpectRefusals()
	admin := srv.JetStream()
	ctx := t.Context()
	lifecycle := events.LifecycleSubject(events.StateRunning, 7)
	_, err := admin.Publish(ctx, lifecycle, []byte(`{"envId":7}`))
	require.NoError(t, err)
	_, err = admin.Publish(ctx, events.SubjectConvergeRequest, []byte(`{"prompt":"a secret"}`))
	require.NoError(t, err)
	_, err = admin.CreateOrUpdateConsumer(ctx, events.StreamTenantLifecycle, jetstream.ConsumerConfig{
		Durable: events.ConsumerMeteringLifecyle, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)

	nc := srv.ConnectAs(natsauth.Integrator)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	t.Run("reads the lifecycle facts with a consumer of its own", func(t *testing.T) {
		c, err := js.CreateOrUpdateConsumer(ctx, events.StreamTenantLifecycle, jetstream.ConsumerConfig{
			Durable: "billing-sync", AckPolicy: jetstream.AckExplicitPolicy,
		})
		require.NoError(t, err)
		msgs, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		var got []string
		for m := range msgs.Messages() {
			got = append(got, m.Subject())
			require.NoError(t, m.Ack())
		}
		require.Equal(t, []string{lifecycle}, got)
	})

	t.Run("and live, on core NATS", func(t *testing.T) {
		sub, err := nc.SubscribeSync(events.LifecycleFilter("", 0))
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		_, err = admin.Publish(ctx, events.LifecycleSubject(events.StateStopped, 7), []byte(`{"envId":7}`))
		require.NoError(t, err)
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, events.LifecycleSubject(events.StateStopped, 7), m.Subject)
	})

	t.Run("may not read the prompts of converge.request", func(t *testing.T) {
		strict, err := nats.Connect(srv.URL(), append(integratorOptions(t, srv), nats.PermissionErrOnSubscribe(true))...)
		require.NoError(t, err)
		defer strict.Close()
		sub, err := strict.SubscribeSync(events.SubjectConvergeRequest)
		require.NoError(t, err)
		_, err = sub.NextMsg(5 * time.Second)
		require.ErrorIs(t, err, nats.ErrPermissionViolation, "the server refuses the subscription")

		rctx, cancel := context.WithTimeout(ctx, refusalWait)
		defer cancel()
		_, err = js.CreateOrUpdateConsumer(rctx, events.StreamConvergeCommands, jetstream.ConsumerConfig{Name: "peek"})
		require.Error(t, err, "nor with a consumer on the commands stream")
		_, err = admin.Consumer(ctx, events.StreamConvergeCommands, "peek")
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
	})

	t.Run("may not publish", func(t *testing.T) {
		before := lastSeq(t, admin, events.StreamTenantLifecycle)
		rctx, cancel := context.WithTimeout(ctx, refusalWait)
		defer cancel()
		_, err := js.Publish(rctx, events.LifecycleSubject(events.StateDestroyed, 7), []byte(`{"envId":7}`))
		require.Error(t, err)
		require.Equal(t, before, lastSeq(t, admin, events.StreamTenantLifecycle))
	})

	t.Run("may not delete or purge a stream", func(t *testing.T) {
		rctx, cancel := context.WithTimeout(ctx, refusalWait)
		defer cancel()
		require.Error(t, js.DeleteStream(rctx, events.StreamTenantLifecycle))
		s, err := admin.Stream(ctx, events.StreamTenantLifecycle)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.NotZero(t, info.State.Msgs, "nothing was purged")
	})

	t.Run("may not take, change or delete a platform consumer", func(t *testing.T) {
		rctx, cancel := context.WithTimeout(ctx, 3*refusalWait)
		defer cancel()
		_, err := js.CreateOrUpdateConsumer(rctx, events.StreamTenantLifecycle, jetstream.ConsumerConfig{
			Durable: events.ConsumerMeteringLifecyle, FilterSubject: "tenant.lifecycle.none.>",
		})
		require.Error(t, err, "changing metering's consumer would take its events away")
		require.Error(t, js.DeleteConsumer(rctx, events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle))
		_, err = js.Consumer(rctx, events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle)
		require.Error(t, err, "nor look it up to pull from it")
		c, err := admin.Consumer(ctx, events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle)
		require.NoError(t, err, "metering's consumer is still there")
		require.Empty(t, c.CachedInfo().Config.FilterSubject, "unchanged")
		require.Zero(t, c.CachedInfo().Delivered.Consumer, "and nobody pulled from it")
	})
}

// integratorOptions are the connection options of a new integrator user of srv.
func integratorOptions(t *testing.T, srv *natstest.Server) []nats.Option {
	t.Helper()
	opts, err := srv.Auth.Connect(natsauth.Integrator, "integrator")
	require.NoError(t, err)
	return opts
}

// lastSeq is the sequence of the last message in stream.
func lastSeq(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}
