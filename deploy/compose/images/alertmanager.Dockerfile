# convergence/alertmanager:local — Alertmanager from Debian's prometheus-alertmanager package
# (unpacked into bin/tools by `make deps`, or installed), with the shared libraries ldd lists
# and the dynamic loader, laid out as the official prom/alertmanager image is
# (/bin/alertmanager, /etc/alertmanager, /alertmanager), plus bin/convergence, whose
# `nats -probe URL` is the healthcheck (there is no shell or wget here).
FROM scratch
COPY rootfs/ /
COPY --chown=65534:65534 data/ /alertmanager/
USER 65534:65534
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager", "--cluster.listen-address="]
