# logferry: a log-shipping sidecar. Build: docker build -t logferry .
# Run: docker run -v /var/log/platform:/var/log/platform:ro -v logferry-data:/var/lib/logferry \
#        -v ./logferry.toml:/etc/logferry/logferry.toml:ro logferry

# The toolchain the project is built and tested with.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin logferry \
    && strip target/release/logferry

# glibc and libgcc only, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Tails audit and job logs, masks them, ships them batched and compressed to S3, Azure Blob, Azure Monitor or HTTP with at-least-once delivery" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/logferry"
COPY --from=build /src/target/release/logferry /usr/local/bin/logferry
# glibc's per-thread malloc arenas are most of the resident set; two keep it flat.
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
# Checkpoints, spool and dead letters: give it a persistent volume.
VOLUME ["/var/lib/logferry"]
EXPOSE 8686
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["/usr/local/bin/logferry", "health", "--url", "http://127.0.0.1:8686/healthz"]
ENTRYPOINT ["/usr/local/bin/logferry"]
# The configuration path is an argument: override CMD to point elsewhere.
CMD ["run", "--config", "/etc/logferry/logferry.toml"]
