# The platform image, convergence/platform:local, for machines that can pull images: a Go
# builder stage, then the static binary on an empty base, run as a non-root user. The compose
# stack (deploy/compose) runs it as NATS and as each of the four services.
#
#   docker build -t convergence/platform:local --build-arg VERSION=$(git describe --always --dirty) .
#
# A machine without a registry builds the same image from bin/convergence instead
# (make images-stack, deploy/compose/images/platform.Dockerfile); nothing here is used there.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a change of the code alone reuses the download layer.
COPY go.work go.work.sum go.mod go.sum ./
COPY pkg/events/go.mod pkg/events/go.sum pkg/events/
COPY pkg/client/go.mod pkg/client/
COPY pkg/api/go.mod pkg/api/
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/convergence ./cmd/convergence \
 && mkdir -p /out/etc /out/data \
 && printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >/out/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/out/etc/group \
 && printf 'passwd: files\ngroup: files\nhosts: files dns\n' >/out/etc/nsswitch.conf

FROM scratch
# CA certificates: the converger calls LLM providers over HTTPS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/etc/ /etc/
COPY --from=build --chown=65532:65532 /out/data/ /data/
COPY --from=build /out/convergence /convergence
USER 65532:65532
ENV CONVERGENCE_DATA_DIR=/data
WORKDIR /data
EXPOSE 3000 4222 8222
LABEL org.opencontainers.image.title="convergence" \
      org.opencontainers.image.source="https://github.com/convergence-dev/convergence" \
      convergence.stack-image="platform"
ENTRYPOINT ["/convergence"]
CMD ["serve"]
