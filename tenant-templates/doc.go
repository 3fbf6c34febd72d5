// Package tenanttemplates builds the default tenant images from the template apps in this
// folder, through the Docker SDK and the local Go toolchain. Nothing is pulled: the images are
// FROM scratch and hold one static binary.
//
// The Go template lives in ./go (a package main on the tenant SDK, pkg/client: the convergence
// endpoints under /api and `GET /health`, on $PORT) with its Dockerfile.
// `go run ./tenant-templates/cmd/tenant-images` builds it from the repository root; tests use
// internal/dockertest.TenantImage, which calls [EnsureGoImage] once per test binary.
package tenanttemplates
