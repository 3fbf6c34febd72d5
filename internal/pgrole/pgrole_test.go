package pgrole_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Wrap(m).Run())
}

// TestRoles_EachServiceHasItsSchemaAndNoRightElsewhere reads every role's rights on every table
// of every service schema from the database's catalog.
func TestRoles_EachServiceHasItsSchemaAndNoRightElsewhere(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	// Append-only tables: their service may read and add rows, never change or remove one.
	appendOnly := map[string]bool{"api.audit_log": true}
	type right struct {
		Schema, Table, Priv string
		Has                 bool
	}
	for _, svc := range pgrole.Services() {
		rows, _ := pool.Query(t.Context(), `
			SELECT n.nspname, c.relname, p.priv, has_table_privilege($1, c.oid, p.priv)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p (priv)
			WHERE c.relkind = 'r' AND n.nspname = ANY($2)
			ORDER BY 1, 2, 3`, pgrole.Role(svc), pgrole.Services())
		rights, err := pgx.CollectRows(rows, pgx.RowToStructByPos[right])
		require.NoError(t, err)
		var elsewhere []string
		tables := 0
		for _, r := range rights {
			switch {
			case r.Schema == svc && appendOnly[r.Schema+"."+r.Table] && (r.Priv == "UPDATE" || r.Priv == "DELETE"):
				require.False(t, r.Has, "%s has %s on its append-only table %s", svc, r.Priv, r.Table)
			case r.Schema == svc:
				tables++
				require.True(t, r.Has, "%s has %s on its own table %s", svc, r.Priv, r.Table)
			case r.Has:
				elsewhere = append(elsewhere, fmt.Sprintf("%s.%s %s", r.Schema, r.Table, r.Priv))
			}
		}
		require.NotZero(t, tables, "%s owns tables", svc)
		require.Empty(t, elsewhere, "%s's rights on other services' tables", svc)
	}
}

// TestRoles_ServiceReachingIntoAnothersTables_PermissionDenied runs statements as the services'
// own connections would, and the database refuses each.
func TestRoles_ServiceReachingIntoAnothersTables_PermissionDenied(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, tc := range []struct{ service, sql string }{
		{pgrole.API, `SELECT count(*) FROM provisioner.environments`},
		{pgrole.API, `UPDATE provisioner.tenant_ports SET env_id = NULL`},
		{pgrole.API, `SELECT sealed FROM provisioner.tenant_secrets`},
		{pgrole.API, `SELECT count(*) FROM metering.metering_ledger`},
		{pgrole.API, `UPDATE converger.convergence_turns SET run = 0`},
		{pgrole.API, `SELECT count(*) FROM converger.convergence_tasks`},
		{pgrole.Provisioner, `SELECT count(*) FROM api.organizations`},
		{pgrole.Provisioner, `SELECT count(*) FROM converger.convergence_tasks`},
		{pgrole.Converger, `SELECT count(*) FROM provisioner.environments`},
		{pgrole.Converger, `INSERT INTO metering.metering_ledger (event_id) VALUES ('forged')`},
		{pgrole.Metering, `SELECT count(*) FROM api.organizations`},
		{pgrole.Metering, `SELECT count(*) FROM converger.convergence_tasks`},
	} {
		_, err := db.For(t, tc.service).Exec(t.Context(), tc.sql)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "%s: %s", tc.service, tc.sql)
		require.Equal(t, "42501", pgErr.Code, "%s: %s: permission denied, got %v", tc.service, tc.sql, err)
	}
}

// TestConfigure_ConnectionActsAsRoleInItsSchema checks what a service's connection is.
func TestConfigure_ConnectionActsAsRoleInItsSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, svc := range pgrole.Services() {
		var user, schema string
		require.NoError(t, db.For(t, svc).QueryRow(t.Context(), `SELECT current_user, current_schema()`).Scan(&user, &schema))
		require.Equal(t, pgrole.Role(svc), user)
		require.Equal(t, svc, schema)
	}
}
