# syntax=docker/dockerfile:1
# AIMCS backend image. The build stage runs the very command scripts/test runs and
# smoke-tests (cargo build --release --locked --bin aimcs-backend), from the same lock file.
# Pass a configuration file with APP_CONFIG (not --config), so that the HEALTHCHECK, which
# runs without arguments, reads the same settings.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin aimcs-backend \
    && install -m 0755 target/release/aimcs-backend /usr/local/bin/aimcs-backend

# The recordings directory, owned by the runtime user (the runtime image has no shell to
# create it).
RUN install -d -m 0750 -o 65532 -g 65532 /out/var/lib/aimcs/recordings

# Runtime: glibc and CA certificates only; no shell, no package manager, not root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/aimcs-backend /usr/local/bin/aimcs-backend
COPY --from=build --chown=65532:65532 /out/var/lib/aimcs /var/lib/aimcs
ENV APP_ENVIRONMENT=production \
    APP_LOG__FORMAT=json \
    APP_AUDIO__FILE__DIR=/var/lib/aimcs/recordings \
    PORT=3000
VOLUME ["/var/lib/aimcs/recordings"]
EXPOSE 3000
USER 65532:65532
# The binary probes its own /livez: the image has no curl or shell to do it.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/aimcs-backend", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/aimcs-backend"]
