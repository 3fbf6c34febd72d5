// Command tenant-images builds the tenant images on the local Docker engine, through the
// Docker SDK, pulling nothing: the Go one, then the Node.js and Python ones on bases made from
// Debian's packages with mmdebstrap (minutes the first time, cached after). Run it from inside
// the repository (`make images` does):
//
//	go run ./tenant-templates/cmd/tenant-images [-force] [-go-only]
//
// A Node.js or Python image that cannot be built (no mmdebstrap, not root, no apt mirror) is
// reported and skipped: spawns of that language then say the image is missing.
// It reads the engine's address from the environment as the docker CLI does (DOCKER_HOST and
// friends) and prints the tag and id of each image.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/docker/docker/client"

	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

func main() {
	force := flag.Bool("force", false, "build even when an up-to-date image exists")
	tag := flag.String("tag", tenanttemplates.GoImage, "tag of the Go tenant image")
	goOnly := flag.Bool("go-only", false, "build the Go image only")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *tag, *force, *goOnly); err != nil {
		log.Error("tenant images", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, tag string, force, goOnly bool) error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer func() { _ = cli.Close() }()
	img, err := tenanttemplates.EnsureGoImage(ctx, cli, tenanttemplates.BuildOptions{Tag: tag, Force: force})
	if err != nil {
		return err
	}
	log.Info("tenant image ready", "tag", img.Tag, "id", img.ID, "built", img.Built)
	fmt.Println(img.Tag, img.ID)
	if goOnly {
		return nil
	}
	for _, language := range []string{"node", "python"} {
		start := time.Now()
		img, err := tenanttemplates.EnsureDebianImage(ctx, cli, language, tenanttemplates.BuildOptions{Force: force})
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			log.Warn("tenant image not built; spawns of this language will say so", "language", language, "err", err)
			continue
		}
		log.Info("tenant image ready", "tag", img.Tag, "id", img.ID, "built", img.Built, "took", time.Since(start).Round(time.Second))
		fmt.Println(img.Tag, img.ID)
	}
	return nil
}
