package tenanttemplates

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/image"
)

// Tags of the Node.js and Python tenant images.
const (
	NodeImage   = "convergence/tenant-node:dev"
	PythonImage = "convergence/tenant-python:dev"
)

// debianSuite is the Debian release the bases are made from.
const debianSuite = "bookworm"

// debianTemplate is a tenant app in a scripting language: its files, with its language's
// client from clients/, on a base made from Debian's own packages by mmdebstrap, so nothing
// comes from a registry.
type debianTemplate struct {
	name     string // the directory in tenant-templates and in the base's tag
	image    string
	packages []string
	// files are the app's files, by their path from the repository root, copied into /app.
	files []string
}

func debianTemplates() []debianTemplate {
	return []debianTemplate{
		{name: "node", image: NodeImage, packages: []string{"nodejs", "node-express"},
			files: []string{"tenant-templates/node/index.mjs", "clients/js/convergence.mjs"}},
		{name: "python", image: PythonImage, packages: []string{"python3-minimal", "python3-flask"},
			files: []string{"tenant-templates/python/app.py", "tenant-templates/python/healthcheck.py", "clients/python/convergence.py"}},
	}
}

// EnsureDebianImages makes the Node.js and Python tenant images exist and match their sources:
// EnsureDebianImage for each.
func EnsureDebianImages(ctx context.Context, cli ImageClient, opts BuildOptions) ([]Image, error) {
	var out []Image
	for _, t := range debianTemplates() {
		img, err := ensureDebianImage(ctx, cli, t, opts)
		if err != nil {
			return out, err
		}
		out = append(out, img)
	}
	return out, nil
}

// EnsureDebianImage makes the tenant image of language ("node" or "python") exist and match
// its sources, as EnsureGoImage does for Go. Its base, the language's Debian packages on a
// minimal Debian, is made once with mmdebstrap (as root, from the machine's apt mirror) and
// imported as convergence/tenant-base-<language>:<hash of the package list>; a later run finds
// it and only builds the app's layer on it. opts.Dir is a directory inside the repository;
// opts.Tag is ignored.
func EnsureDebianImage(ctx context.Context, cli ImageClient, language string, opts BuildOptions) (Image, error) {
	i := slices.IndexFunc(debianTemplates(), func(t debianTemplate) bool { return t.name == language })
	if i < 0 {
		return Image{}, fmt.Errorf("no Debian template for %q: use node or python", language)
	}
	return ensureDebianImage(ctx, cli, debianTemplates()[i], opts)
}

func ensureDebianImage(ctx context.Context, cli ImageClient, t debianTemplate, opts BuildOptions) (Image, error) {
	root, err := repositoryRoot(opts.Dir)
	if err != nil {
		return Image{}, err
	}
	base, err := ensureBase(ctx, cli, t)
	if err != nil {
		return Image{}, err
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "tenant-templates", t.name, "Dockerfile"))
	if err != nil {
		return Image{}, fmt.Errorf("%s template: %w", t.name, err)
	}
	sum := sha256.New()
	sum.Write([]byte(base + "\n"))
	sum.Write(dockerfile)
	files := map[string][]byte{"Dockerfile": dockerfile}
	for _, f := range t.files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return Image{}, fmt.Errorf("%s template: %w", t.name, err)
		}
		files["app/"+filepath.Base(f)] = b
		sum.Write([]byte(f + "\n"))
		sum.Write(b)
	}
	hash := hex.EncodeToString(sum.Sum(nil))

	tarball, err := tarOf(files)
	if err != nil {
		return Image{}, err
	}
	return buildImage(ctx, cli, t.image, t.name, hash, opts.Force, tarball, map[string]*string{"BASE": &base})
}

// mmdebstrapArgs are the options of the bases' mmdebstrap run, part of their hash: Debian's
// essential packages and the template's, without documentation.
var mmdebstrapArgs = []string{"--variant=essential", "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
	"--dpkgopt=path-include=/usr/share/doc/*/copyright"}

// ensureBase returns the tag of t's base image, made with mmdebstrap and imported unless an
// image with that tag exists.
func ensureBase(ctx context.Context, cli ImageClient, t debianTemplate) (string, error) {
	sum := sha256.Sum256([]byte(strings.Join(append(append([]string{debianSuite}, mmdebstrapArgs...), t.packages...), "\n")))
	tag := "convergence/tenant-base-" + t.name + ":" + hex.EncodeToString(sum[:6])
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag, nil
	}
	mmdebstrap, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return "", errors.New("mmdebstrap is not installed; it makes the Node.js and Python tenant bases from Debian's packages: apt-get install mmdebstrap (make deps does)")
	}
	dir, err := os.MkdirTemp("", "tenant-base-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	out := filepath.Join(dir, "rootfs.tar")
	args := append(slices.Clone(mmdebstrapArgs), "--include="+strings.Join(t.packages, ","), debianSuite, out)
	cmd := exec.CommandContext(ctx, mmdebstrap, args...)
	cmd.WaitDelay = 10 * time.Second
	if output, err := cmd.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(output)), "\n")
		return "", fmt.Errorf("mmdebstrap %s (as root, from this machine's apt mirror): %w: %s", strings.Join(args, " "), err,
			strings.Join(lines[max(0, len(lines)-5):], " | "))
	}
	f, err := os.Open(out)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: f, SourceName: "-"}, tag, image.ImportOptions{
		Message: "convergence: " + t.name + " tenant base, mmdebstrap " + debianSuite + " " + strings.Join(t.packages, " "),
	})
	if err != nil {
		return "", fmt.Errorf("import %s: %w", tag, err)
	}
	defer rc.Close()
	if err := readBuildOutput(rc); err != nil {
		return "", fmt.Errorf("import %s: %w", tag, err)
	}
	return tag, nil
}

// repositoryRoot is the directory above dir ("" for the current one) that holds the module's
// go.mod and the clients.
func repositoryRoot(dir string) (string, error) {
	if dir == "" {
		dir = "."
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "clients")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("%s is not inside the convergence repository (no go.mod with clients/ above it)", dir)
		}
		d = parent
	}
}
