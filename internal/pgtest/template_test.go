package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestBuildTemplate_ConcurrentCallers_AllSucceedOnOneTemplate(t *testing.T) {
	t.Parallel()
	h := harnessFor(t)
	name := scratchTemplate(t, h)

	// Each call has its own connection, as separate test binaries sharing a server would.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = buildTemplate(t.Context(), h.baseURL, name) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	requireMigratedTemplate(t, h, name)
}

func TestBuildTemplate_UnfinishedTemplate_Rebuilt(t *testing.T) {
	t.Parallel()
	h := harnessFor(t)
	name := scratchTemplate(t, h)
	// A build cut short leaves a database that is not marked as a template, with some or no
	// migrations applied.
	require.NoError(t, h.exec(t.Context(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()))

	require.NoError(t, buildTemplate(t.Context(), h.baseURL, name))
	requireMigratedTemplate(t, h, name)
}

func TestWithDatabase_URLAndKeywordValue_DatabaseReplaced(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ base, want string }{
		{"postgres://u@127.0.0.1:5432/convergence?sslmode=disable", "postgres://u@127.0.0.1:5432/other?sslmode=disable"},
		{"postgresql://u:p@db/", "postgresql://u:p@db/other"},
		{"host=db user=u dbname=convergence", "host=db user=u dbname=convergence dbname=other"},
	} {
		got, err := withDatabase(tc.base, "other")
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
		config, err := pgx.ParseConfig(got)
		require.NoError(t, err)
		require.Equal(t, "other", config.Database)
	}
}

func TestDatabaseName_LongTestName_FitsPostgresLimit(t *testing.T) {
	t.Parallel()
	name, err := databaseName("TestSomething/" + strings.Repeat("Very Long Subtest ", 10))
	require.NoError(t, err)
	require.LessOrEqual(t, len(name), 63)
	require.Regexp(t, `^pgtest_testsomething_very_long_[a-z0-9_]*_[0-9a-f]{12}$`, name)
}

func harnessFor(t *testing.T) *harness {
	t.Helper()
	h, err := shared.get()
	require.NoError(t, err)
	return h
}

// scratchTemplate names a template database for one test and drops it when the test ends.
func scratchTemplate(t *testing.T, h *harness) string {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "pgtest_scratch_" + hex.EncodeToString(suffix)
	t.Cleanup(func() {
		ident := pgx.Identifier{name}.Sanitize()
		_ = h.exec(context.Background(), "ALTER DATABASE "+ident+" IS_TEMPLATE false")
		require.NoError(t, h.exec(context.Background(), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"))
	})
	return name
}

func requireMigratedTemplate(t *testing.T, h *harness, name string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), h.baseURL)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	var isTemplate, allowConn bool
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1", name).Scan(&isTemplate, &allowConn))
	require.True(t, isTemplate)
	require.False(t, allowConn, "a connection to the template would block cloning it")

	clone := name + "_clone"
	ident := pgx.Identifier{clone}.Sanitize()
	require.NoError(t, h.exec(t.Context(), "CREATE DATABASE "+ident+" TEMPLATE "+pgx.Identifier{name}.Sanitize()))
	defer func() { require.NoError(t, h.exec(context.Background(), "DROP DATABASE "+ident+" WITH (FORCE)")) }()
	url, err := withDatabase(h.baseURL, clone)
	require.NoError(t, err)
	cloneConn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer func() { _ = cloneConn.Close(context.Background()) }()
	var outbox *string
	require.NoError(t, cloneConn.QueryRow(t.Context(), "SELECT to_regclass('api.outbox')::text").Scan(&outbox))
	require.NotNil(t, outbox, "the template has the migrations applied")
}
