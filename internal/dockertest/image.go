package dockertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"

	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// tenantImage memoizes the tenant image build for the test binary (templateImages the others'),
// the reason the helpers exist: a test binary builds (or checks) an image once however many
// tests ask for it.
var tenantImage = struct {
	once sync.Once
	tag  string
	err  error
}{}

// TenantImage returns the tag of the default tenant image (tenanttemplates.GoImage), making
// sure once per test binary that it exists and matches the template's source: it compiles the
// template and builds the image FROM scratch through the SDK when it is missing or stale.
// Nothing is pulled. It fails the test when the build fails.
func TenantImage(t testing.TB) string {
	t.Helper()
	cli := Client(t)
	tenantImage.once.Do(func() {
		tenantImage.tag, tenantImage.err = buildTenantImage(cli)
	})
	if tenantImage.err != nil {
		t.Fatalf("tenant image: %v", tenantImage.err)
	}
	return tenantImage.tag
}

// buildTenantImage runs outside any one test's context, since every later test shares it.
// A lock file serializes it across the test binaries `go test ./...` runs in parallel: the
// first builds, the others then find the image up to date instead of building it again.
func buildTenantImage(cli *client.Client) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var tag string
	err := withBuildLock(func() error {
		img, err := tenanttemplates.EnsureGoImage(ctx, cli, tenanttemplates.BuildOptions{})
		tag = img.Tag
		return err
	})
	return tag, err
}

// withBuildLock runs build holding a lock file that serializes image builds across the test
// binaries `go test ./...` runs in parallel.
func withBuildLock(build func() error) error {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "convergence-tenant-image.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open build lock: %w", err)
	}
	defer func() { _ = lock.Close() }() // Closing the file releases the lock.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("take build lock: %w", err)
	}
	return build()
}

// templateImages holds the Node.js and Python images, built once per test binary.
var templateImages struct {
	once sync.Once
	err  error
}

// TemplateImages builds (or finds up to date) the Node.js and Python tenant images for the
// tests that spawn them, under the same lock as TenantImage. Their bases come from Debian's
// packages with mmdebstrap: minutes the first time on a machine, then cached in the engine.
func TemplateImages(t testing.TB) {
	t.Helper()
	cli := Client(t)
	templateImages.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		templateImages.err = withBuildLock(func() error {
			_, err := tenanttemplates.EnsureDebianImages(ctx, cli, tenanttemplates.BuildOptions{})
			return err
		})
	})
	if templateImages.err != nil {
		t.Fatalf("tenant template images: %v", templateImages.err)
	}
}
