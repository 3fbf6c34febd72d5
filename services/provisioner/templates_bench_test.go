package provisioner_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
)

// BenchmarkTemplates spawns each template's tenant through the service, timing the spawn to
// its answer (running, its app answering GET /health), and reads an idle one's memory: the
// Node.js and Python templates next to the Go one, measured in the same run (goals: idle
// Go ≤ 8 MiB, Node.js ≤ 45 MiB, Python ≤ 35 MiB). Run it with `make bench`, or:
//
//	go test -run '^$' -bench Templates -benchtime 5x ./services/provisioner/
func BenchmarkTemplates(b *testing.B) {
	h := newHarness(b)
	dockertest.TemplateImages(b)
	languages := []string{"go", "node", "python"}
	took := map[string][]time.Duration{}
	idle := map[string]idleMemory{}
	seq := 0
	for _, lang := range languages {
		b.Run(lang, func(b *testing.B) {
			for b.Loop() {
				seq++
				start := time.Now()
				code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": fmt.Sprintf("tpl-%s-%d", lang, seq), "language": lang})
				took[lang] = append(took[lang], time.Since(start))
				require.Equal(b, http.StatusCreated, code, "%v", body)
				envID := envIDOf(body["tenant"].(map[string]any))
				if _, ok := idle[lang]; !ok {
					time.Sleep(3 * time.Second) // let it settle into idle
					idle[lang] = h.idleMemory(envID)
				}
				code, body = h.do(http.MethodDelete, tenantPath(envID, ""), nil)
				require.Contains(b, []int{http.StatusOK, http.StatusAccepted}, code, "%v", body)
			}
			b.ReportMetric(ms(pct(took[lang], 50)), "spawn-p50-ms")
			b.ReportMetric(float64(idle[lang].rssKiB)/1024, "idle-rss-MiB")
		})
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\ntemplate   n   spawn p50 ms   x go   idle\n")
	for _, lang := range languages {
		fmt.Fprintf(&t, "%-8s %3d %14.1f %6.2f   %s\n", lang, len(took[lang]), ms(pct(took[lang], 50)), ratio(took[lang], took["go"]), idle[lang])
	}
	fmt.Print(t.String())
}
