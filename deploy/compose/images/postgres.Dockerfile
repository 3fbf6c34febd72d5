# convergence/postgres:local — PostgreSQL from this machine's own server package, run by
# `convergence postgres` (internal/pglocal) as a non-root user, listening on every interface
# with scram-sha-256 password authentication. deploy/compose/images.sh fills the build context
# from the host: postgres and initdb, the server's lib and share directories (JIT left out),
# the system time zone data the package is built against, every shared library ldd lists for
# them and the dynamic loader, /bin/sh (initdb runs the server through popen), a minimal
# /etc/passwd, and bin/convergence. The data directory is the volume mount point, owned by
# the server's user so that a new volume inherits it.
FROM scratch
COPY rootfs/ /
COPY --chown=999:999 pgdata/ /var/lib/postgresql/data/
USER 999:999
ENV TZ=UTC \
    CONVERGENCE_POSTGRES_DIR=/var/lib/postgresql/data \
    CONVERGENCE_POSTGRES_LISTEN=0.0.0.0 \
    CONVERGENCE_POSTGRES_PORT=5432
EXPOSE 5432
STOPSIGNAL SIGTERM
ENTRYPOINT ["/convergence", "postgres"]
