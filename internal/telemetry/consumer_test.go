package telemetry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/telemetry"
)

func TestConsumerMetrics_ReportTheBacklogJetStreamCounts(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream()
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LAG", Subjects: []string{"lag.>"}})
	require.NoError(t, err)
	for range 5 {
		_, err := js.Publish(ctx, "lag.x", []byte("{}"))
		require.NoError(t, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "lagging", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	batch, err := cons.FetchNoWait(2) // delivered, not acknowledged
	require.NoError(t, err)
	for range batch.Messages() {
	}

	reg := prometheus.NewRegistry()
	m := telemetry.NewConsumerMetrics(reg)
	unwatch := m.Watch("lagging", cons)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP convergence_consumer_ack_pending_messages Messages a consumer delivered and has yet to have acknowledged, as JetStream counts them at the scrape.
# TYPE convergence_consumer_ack_pending_messages gauge
convergence_consumer_ack_pending_messages{consumer="lagging"} 2
# HELP convergence_consumer_pending_messages Messages of a consumer's stream it has yet to deliver, as JetStream counts them at the scrape.
# TYPE convergence_consumer_pending_messages gauge
convergence_consumer_pending_messages{consumer="lagging"} 3
`), "convergence_consumer_pending_messages", "convergence_consumer_ack_pending_messages"))

	// Another service of the process registers the same metrics on the registry without a clash.
	telemetry.NewConsumerMetrics(reg)
	unwatch()
	n, err := testutil.GatherAndCount(reg, "convergence_consumer_pending_messages")
	require.NoError(t, err)
	require.Zero(t, n, "a stopped consumer is not reported")
}
