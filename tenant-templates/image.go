package tenanttemplates

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// GoImage is the tag of the default Go tenant image.
const GoImage = "convergence/tenant-go:dev"

// Labels on the built image. LabelContentHash lets EnsureGoImage skip a build whose result
// would be identical.
const (
	LabelTemplate    = "convergence.template"
	LabelContentHash = "convergence.template.hash"
)

// goPackage is the template app, built by import path so it may later import other packages
// of the module.
const goPackage = "github.com/convergence-dev/convergence/tenant-templates/go"

//go:embed go/Dockerfile
var goDockerfile []byte

// ImageClient is the part of the Docker client that EnsureGoImage uses; *client.Client
// implements it.
type ImageClient interface {
	ServerVersion(ctx context.Context) (types.Version, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageBuild(ctx context.Context, buildContext io.Reader, opts build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageRemove(ctx context.Context, ref string, opts image.RemoveOptions) ([]image.DeleteResponse, error)
	ImageImport(ctx context.Context, source image.ImportSource, ref string, opts image.ImportOptions) (io.ReadCloser, error)
}

// BuildOptions tunes EnsureGoImage. The zero value builds GoImage from the current
// directory's module.
type BuildOptions struct {
	// Tag names the image; empty means GoImage.
	Tag string
	// Dir is a directory inside the convergence module, where `go build` runs; empty means
	// the current directory.
	Dir string
	// Force builds even when an image with the tag already holds the same content.
	Force bool
}

// Image is a built (or found) tenant image.
type Image struct {
	Tag         string
	ID          string
	ContentHash string
	// Built is false when an up-to-date image already existed.
	Built bool
}

// EnsureGoImage makes the Go tenant image exist and match the template's source. It compiles
// the template with CGO_ENABLED=0 for the engine's OS and architecture (with -trimpath, so
// the binary is reproducible), hashes binary and Dockerfile, and builds the image through the
// SDK unless an image with the tag already carries that hash; the image it replaces is removed
// when no container uses it. It needs the `go` command on
// PATH and runs it with the process environment. It pulls nothing and blocks until the build
// ends or ctx is done.
func EnsureGoImage(ctx context.Context, cli ImageClient, opts BuildOptions) (Image, error) {
	if opts.Tag == "" {
		opts.Tag = GoImage
	}
	ver, err := cli.ServerVersion(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("docker server version: %w", err)
	}
	if ver.Os != "" && ver.Os != "linux" {
		return Image{}, fmt.Errorf("docker engine runs %s containers; the tenant image needs linux", ver.Os)
	}

	bin, err := buildBinary(ctx, opts.Dir, ver.Arch)
	if err != nil {
		return Image{}, err
	}
	sum := sha256.New()
	sum.Write(goDockerfile)
	sum.Write(bin)
	hash := hex.EncodeToString(sum.Sum(nil))

	tarball, err := buildContext(goDockerfile, bin)
	if err != nil {
		return Image{}, err
	}
	return buildImage(ctx, cli, opts.Tag, "go", hash, opts.Force, tarball, nil)
}

// buildImage builds tag from the build context tarball (with buildArgs), labelled as
// template's with its content hash, unless an image with the tag already carries hash (and
// not force). The image it replaces is removed when no container uses it.
func buildImage(ctx context.Context, cli ImageClient, tag, template, hash string, force bool, tarball []byte, buildArgs map[string]*string) (Image, error) {
	previous := ""
	if existing, err := cli.ImageInspect(ctx, tag); err == nil {
		if !force && existing.Config != nil && existing.Config.Labels[LabelContentHash] == hash {
			return Image{Tag: tag, ID: existing.ID, ContentHash: hash}, nil
		}
		previous = existing.ID
	}
	resp, err := cli.ImageBuild(ctx, bytes.NewReader(tarball), build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		PullParent:  false,
		BuildArgs:   buildArgs,
		Labels:      map[string]string{LabelTemplate: template, LabelContentHash: hash},
		// The classic builder needs no BuildKit session and no registry for FROM scratch.
		Version: build.BuilderV1,
	})
	if err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	if err := readBuildOutput(resp.Body); err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", tag, err)
	}
	built, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return Image{}, fmt.Errorf("inspect built image %s: %w", tag, err)
	}
	if previous != "" && previous != built.ID {
		// The old image lost its tag; remove it unless a container still uses it (then the
		// engine refuses, which is fine).
		_, _ = cli.ImageRemove(ctx, previous, image.RemoveOptions{PruneChildren: true})
	}
	return Image{Tag: tag, ID: built.ID, ContentHash: hash, Built: true}, nil
}

// buildBinary compiles the Go template statically for linux/arch and returns the binary.
func buildBinary(ctx context.Context, dir, arch string) ([]byte, error) {
	if arch == "" {
		arch = "amd64"
	}
	tmp, err := os.MkdirTemp("", "tenant-go-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	out := filepath.Join(tmp, "tenant")

	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, goPackage)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.WaitDelay = 5 * time.Second
	if output, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s (in %q): %w: %s", goPackage, dir, err, strings.TrimSpace(string(output)))
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read tenant binary: %w", err)
	}
	return bin, nil
}

// buildContext returns a tar of the Dockerfile and the binary, named as the Dockerfile
// expects.
func buildContext(dockerfile, bin []byte) ([]byte, error) {
	return tarOf(map[string][]byte{"Dockerfile": dockerfile, "tenant": bin}, "tenant")
}

// tarOf is a build context of files, by name, 0644 but the executables 0755, with a fixed
// mtime, so the context, and so the builder's cache key, is reproducible.
func tarOf(files map[string][]byte, executables ...string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mode := int64(0o644)
		if slices.Contains(executables, n) {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return nil, fmt.Errorf("tar %s: %w", n, err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			return nil, fmt.Errorf("tar %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// readBuildOutput reads the builder's JSON message stream to its end and returns the first
// error it reports, with the last lines of build output for context.
func readBuildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read build output: %w", err)
		}
		if s := strings.TrimSpace(m.Stream); s != "" {
			tail = append(tail, s)
			if len(tail) > 10 {
				tail = tail[1:]
			}
		}
		if m.Error != "" || m.ErrorDetail.Message != "" {
			msg := m.ErrorDetail.Message
			if msg == "" {
				msg = m.Error
			}
			return fmt.Errorf("%s (after: %s)", msg, strings.Join(tail, " | "))
		}
	}
}
