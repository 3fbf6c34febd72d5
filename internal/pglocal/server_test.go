//go:build linux

package pglocal_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pglocal"
)

func TestStart_StopThenStartAgain_ReusesClusterAndData(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)

	s := start(t, cfg)
	exec1(t, s.URL(), "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('survives')")
	require.NoError(t, s.Stop(t.Context()))
	require.NoError(t, s.Stop(t.Context()), "a second Stop returns the first one's result")
	require.Empty(t, serverProcesses(t, cfg.Dir), "no postgres process may outlive Stop")
	requireClosed(t, s.Done())

	s = start(t, cfg)
	require.Equal(t, "survives", queryString(t, s.URL(), "SELECT v FROM kept"))
	require.NoError(t, s.Stop(t.Context()))
	require.Empty(t, serverProcesses(t, cfg.Dir))
}

func TestStart_ServerKilled_StalePIDFileRemovedAndDataKept(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)

	s := start(t, cfg)
	exec1(t, s.URL(), "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('survives')")
	pid := postmasterPID(t, cfg.Dir)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	requireClosed(t, s.Done())
	require.ErrorContains(t, s.Stop(t.Context()), "exited before Stop")
	require.FileExists(t, filepath.Join(cfg.Dir, "postmaster.pid"), "a killed server leaves its pid file")

	s = start(t, cfg)
	require.Equal(t, "survives", queryString(t, s.URL(), "SELECT v FROM kept"))
	require.NoError(t, s.Stop(t.Context()))
	require.Empty(t, serverProcesses(t, cfg.Dir))
}

func TestStart_OwnerProcessKilled_ServerDiesWithItAndNextStartRecovers(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)

	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperDirEnv+"="+cfg.Dir)
	helper.Stderr = os.Stderr
	helper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := helper.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, helper.Start())
	t.Cleanup(func() { _ = helper.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the helper process prints its server's URL once it is ready")
	exec1(t, strings.TrimSpace(line), "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('survives')")
	require.NotEmpty(t, serverProcesses(t, cfg.Dir))

	require.NoError(t, helper.Process.Kill())
	_ = helper.Wait() // killed: the error says so
	require.Eventually(t, func() bool { return len(serverProcesses(t, cfg.Dir)) == 0 }, 10*time.Second, 20*time.Millisecond,
		"the server must die with the process that started it")

	s := start(t, cfg)
	require.Equal(t, "survives", queryString(t, s.URL(), "SELECT v FROM kept"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_DirServedByRunningServer_ErrInUse(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := start(t, cfg)

	_, err := pglocal.Start(t.Context(), cfg)
	require.ErrorIs(t, err, pglocal.ErrInUse)
	require.Equal(t, 1, queryInt(t, s.URL(), "SELECT 1"), "the running server is left alone")
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_EmptyDirWithoutCache_InitdbCreatesCluster(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.InitCache = ""

	s := start(t, cfg)
	require.FileExists(t, filepath.Join(cfg.Dir, "PG_VERSION"))
	require.Equal(t, "convergence", queryString(t, s.URL(), "SELECT current_user"))
	require.Equal(t, "UTF8", queryString(t, s.URL(), "SHOW server_encoding"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_DataDirPathTooLongForSocket_ServerStarts(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Dir = filepath.Join(cfg.Dir, strings.Repeat("d", 100))
	require.Greater(t, len(cfg.Dir+"/.s.PGSQL.65535"), 107)

	s := start(t, cfg)
	require.Equal(t, 1, queryInt(t, s.URL(), "SELECT 1"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_DirHoldsOtherFiles_Error(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	require.NoError(t, os.MkdirAll(cfg.Dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Dir, "notes.txt"), []byte("mine"), 0o600))

	_, err := pglocal.Start(t.Context(), cfg)
	require.ErrorContains(t, err, "neither empty nor a PostgreSQL cluster")
	require.FileExists(t, filepath.Join(cfg.Dir, "notes.txt"))
}

func TestStart_NoBinariesInBinDir_ErrorSaysHowToInstall(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.BinDir = t.TempDir()

	_, err := pglocal.Start(t.Context(), cfg)
	require.ErrorIs(t, err, pglocal.ErrBinariesNotFound)
	require.ErrorContains(t, err, "apt-get install postgresql")
}

// testConfig is a configuration for a new data directory, with the init cache that pgtest
// shares, so that most tests copy a cluster instead of running initdb.
func testConfig(t *testing.T) pglocal.Config {
	t.Helper()
	return pglocal.Config{
		Dir:       filepath.Join(tempDir(t), "data"),
		Logger:    slog.New(slog.NewTextHandler(t.Output(), nil)),
		NoSync:    true,
		InitCache: initCache(),
	}
}

// tempDir is a directory removed when the test ends. It is in memory when /dev/shm is a tmpfs:
// creating a cluster's thousand files there is several times faster than on a disk. It is
// searchable by others, since the postgres user must pass through it when we are root.
func tempDir(t *testing.T) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != 0x01021994 /* tmpfs */ {
		dir := t.TempDir()
		require.NoError(t, os.Chmod(filepath.Dir(dir), 0o711)) // t.TempDir's parent has mode 0700
		return dir
	}
	dir, err := os.MkdirTemp("/dev/shm", "pglocal-test-")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	require.NoError(t, os.Chmod(dir, 0o711))
	return dir
}

// start starts a server and makes sure it is stopped when the test ends, even if it fails.
func start(t *testing.T, cfg pglocal.Config) *pglocal.Server {
	t.Helper()
	begin := time.Now()
	s, err := pglocal.Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Logf("started in %v", time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() { _ = s.Stop(context.Background()) }) // idempotent; the test checks its own Stop
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func exec1(t *testing.T, url string, statements ...string) {
	t.Helper()
	conn := connect(t, url)
	for _, sql := range statements {
		_, err := conn.Exec(t.Context(), sql)
		require.NoError(t, err, sql)
	}
	require.NoError(t, conn.Close(t.Context()))
}

func queryString(t *testing.T, url, sql string) string {
	t.Helper()
	var v string
	conn := connect(t, url)
	require.NoError(t, conn.QueryRow(t.Context(), sql).Scan(&v))
	require.NoError(t, conn.Close(t.Context()))
	return v
}

func queryInt(t *testing.T, url, sql string) int {
	t.Helper()
	var v int
	conn := connect(t, url)
	require.NoError(t, conn.QueryRow(t.Context(), sql).Scan(&v))
	require.NoError(t, conn.Close(t.Context()))
	return v
}

func postmasterPID(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	require.NoError(t, err)
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(first)
	require.NoError(t, err)
	return pid
}

// serverProcesses lists the live processes working in dir: every process of a PostgreSQL
// server runs in its data directory. Zombies have no working directory and are not listed.
func serverProcesses(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

func requireClosed(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server has not exited")
	}
}

func TestStop_ContextEnded_ServerKilledAndErrorReturned(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := start(t, cfg)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, s.Stop(ctx), context.Canceled)
	requireClosed(t, s.Done())
	require.Eventually(t, func() bool { return len(serverProcesses(t, cfg.Dir)) == 0 }, 10*time.Second, 20*time.Millisecond,
		"the backends of a killed server exit on their own")
}

func TestStart_PIDFileNamesUnrelatedLiveProcess_TreatedAsStale(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := start(t, cfg)
	require.NoError(t, s.Stop(t.Context()))
	// After a reboot or in a container, the PID of a dead server is often some other process's.
	pidFile := fmt.Sprintf("%d\n%s\n", os.Getpid(), cfg.Dir)
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Dir, "postmaster.pid"), []byte(pidFile), 0o600))

	s = start(t, cfg)
	require.Equal(t, 1, queryInt(t, s.URL(), "SELECT 1"))
	require.NoError(t, s.Stop(t.Context()))
}

func TestStart_ParentDirClosedToOthers_WorksOnlyWithoutUserSwitch(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	closed := filepath.Join(filepath.Dir(cfg.Dir), "closed")
	require.NoError(t, os.Mkdir(closed, 0o700))
	cfg.Dir = filepath.Join(closed, "data")

	s, err := pglocal.Start(t.Context(), cfg)
	if os.Geteuid() == 0 {
		// The server runs as the postgres user, which cannot reach the data directory.
		require.ErrorContains(t, err, closed+" is not searchable by user postgres")
		return
	}
	require.NoError(t, err, "the current user runs the server and owns the directory")
	require.NoError(t, s.Stop(t.Context()))
}
