package pgtest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestNew_ParallelTests_GetSeparateMigratedDatabases(t *testing.T) {
	var mu sync.Mutex
	databases := map[string]bool{}
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"first", "second"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				pool := pgtest.New(t)

				var database string
				require.NoError(t, pool.QueryRow(t.Context(), "SELECT current_database()").Scan(&database))
				_, err := pool.Exec(t.Context(),
					"INSERT INTO api.outbox (event_id, subject, payload) VALUES ($1, 'test.subject', '{}')", name)
				require.NoError(t, err, "the migrations create the outbox table")

				var eventIDs []string
				rows, err := pool.Query(t.Context(), "SELECT event_id FROM outbox")
				require.NoError(t, err)
				eventIDs, err = pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				require.Equal(t, []string{name}, eventIDs, "a test sees only its own rows")

				var org string
				require.NoError(t, pool.QueryRow(t.Context(), "SELECT name FROM organizations").Scan(&org))
				require.Equal(t, "default", org, "the migrations' data is there too")

				mu.Lock()
				defer mu.Unlock()
				databases[database] = true
			})
		}
	})
	require.Len(t, databases, 2, "each test gets its own database")
}

func TestNewDB_SecondPoolOnURL_SeesTheSameDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	other, err := pgxpool.New(t.Context(), db.URL)
	require.NoError(t, err)
	t.Cleanup(other.Close)

	_, err = db.Pool.Exec(t.Context(), "INSERT INTO api.outbox (event_id, subject, payload) VALUES ('e1', 's', '{}')")
	require.NoError(t, err)
	var subject, database string
	require.NoError(t, other.QueryRow(t.Context(), "SELECT subject, current_database() FROM api.outbox WHERE event_id = 'e1'").
		Scan(&subject, &database))
	require.Equal(t, "s", subject)
	require.Equal(t, db.Name, database)
}

func TestNew_TestEnds_DatabaseDroppedDespiteOpenConnection(t *testing.T) {
	t.Parallel()
	observer := pgtest.New(t)

	var name string
	t.Run("user", func(t *testing.T) {
		db := pgtest.NewDB(t)
		name = db.Name
		leftOpen, err := pgx.Connect(t.Context(), db.URL)
		require.NoError(t, err)
		_ = leftOpen // never closed, as a careless test would leave it
	})

	var exists bool
	require.NoError(t, observer.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists))
	require.False(t, exists, "database %s must be dropped when its test ends", name)
}
