package main

import (
	"encoding/json"
	"net/http"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/internal/telemetry"
)

// natsMonitorHandler serves the standalone NATS server's monitoring: /healthz (the server's own
// health check, JetStream included: 200 or 503), /varz and /jsz (the server's JSON, as
// nats-server's monitoring port has them) and /metrics (Prometheus). The server's own monitoring
// port is not used: its handlers need state only its HTTP server sets up.
func natsMonitorHandler(srv *server.Server) http.Handler {
	reg := telemetry.NewRegistry()
	reg.MustRegister(newNATSCollector(srv))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		h := srv.Healthz(&server.HealthzOptions{})
		writeJSON(w, h.StatusCode, h)
	})
	mux.HandleFunc("GET /varz", func(w http.ResponseWriter, _ *http.Request) {
		v, err := srv.Varz(nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /jsz", func(w http.ResponseWriter, _ *http.Request) {
		j, err := srv.Jsz(nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, j)
	})
	mux.Handle("GET /metrics", telemetry.MetricsHandler(reg))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do about it
}

// natsCollector exposes the NATS server's counters and JetStream usage, read at scrape time.
type natsCollector struct {
	srv                                                     *server.Server
	connections, inMsgs, inBytes, outMsgs, outBytes, slow   *prometheus.Desc
	streams, consumers, messages, storageBytes, memoryBytes *prometheus.Desc
}

func newNATSCollector(srv *server.Server) natsCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(telemetry.Namespace, "nats", name), help, nil, nil)
	}
	return natsCollector{
		srv:          srv,
		connections:  desc("connections", "Client connections open now."),
		inMsgs:       desc("received_messages_total", "Messages the server received."),
		inBytes:      desc("received_bytes_total", "Payload bytes the server received."),
		outMsgs:      desc("sent_messages_total", "Messages the server sent."),
		outBytes:     desc("sent_bytes_total", "Payload bytes the server sent."),
		slow:         desc("slow_consumers_total", "Clients disconnected for reading too slowly."),
		streams:      desc("jetstream_streams", "JetStream streams."),
		consumers:    desc("jetstream_consumers", "JetStream consumers."),
		messages:     desc("jetstream_messages", "Messages stored in JetStream streams."),
		storageBytes: desc("jetstream_storage_bytes", "Bytes of JetStream file storage in use."),
		memoryBytes:  desc("jetstream_memory_bytes", "Bytes of JetStream memory storage in use."),
	}
}

func (c natsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connections, c.inMsgs, c.inBytes, c.outMsgs, c.outBytes, c.slow,
		c.streams, c.consumers, c.messages, c.storageBytes, c.memoryBytes} {
		ch <- d
	}
}

// Collect reads the server's statistics once per scrape; a family whose read fails is left out.
func (c natsCollector) Collect(ch chan<- prometheus.Metric) {
	if v, err := c.srv.Varz(nil); err == nil {
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.GaugeValue, float64(v.Connections))
		ch <- prometheus.MustNewConstMetric(c.inMsgs, prometheus.CounterValue, float64(v.InMsgs))
		ch <- prometheus.MustNewConstMetric(c.inBytes, prometheus.CounterValue, float64(v.InBytes))
		ch <- prometheus.MustNewConstMetric(c.outMsgs, prometheus.CounterValue, float64(v.OutMsgs))
		ch <- prometheus.MustNewConstMetric(c.outBytes, prometheus.CounterValue, float64(v.OutBytes))
		ch <- prometheus.MustNewConstMetric(c.slow, prometheus.CounterValue, float64(v.SlowConsumers))
	}
	if j, err := c.srv.Jsz(nil); err == nil {
		ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(j.Streams))
		ch <- prometheus.MustNewConstMetric(c.consumers, prometheus.GaugeValue, float64(j.Consumers))
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(j.Messages))
		ch <- prometheus.MustNewConstMetric(c.storageBytes, prometheus.GaugeValue, float64(j.Store))
		ch <- prometheus.MustNewConstMetric(c.memoryBytes, prometheus.GaugeValue, float64(j.Memory))
	}
}
