# convergence/platform:local — the one image of the stack's NATS server and four services, on
# a machine without a registry. deploy/compose/images.sh fills the build context:
#   convergence                          bin/convergence, static (CGO_ENABLED=0)
#   etc/passwd, etc/group                the user the services run as (65532, "nonroot")
#   etc/ssl/certs/ca-certificates.crt    the host's CA bundle, for HTTPS to LLM providers
#   data/                                an empty directory, the data dir and volume mount point
# The repository's root Dockerfile builds the same image where golang images can be pulled.
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 data/ /data/
USER 65532:65532
ENV CONVERGENCE_DATA_DIR=/data
WORKDIR /data
EXPOSE 3000 4222 8222
ENTRYPOINT ["/convergence"]
CMD ["serve"]
