# convergence/prometheus:local — Prometheus from this machine's Debian package (installed
# with apt-get, or unpacked from the downloaded package when it is not installed), with the
# shared libraries ldd lists and the dynamic loader, laid out as the official prom/prometheus
# image is (/bin/prometheus, /etc/prometheus, /prometheus), plus bin/convergence, whose
# `nats -probe URL` is the healthcheck (there is no shell or wget here).
FROM scratch
COPY rootfs/ /
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]
