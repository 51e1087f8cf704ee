# logferry: a log-shipping sidecar. Build: docker build -t logferry .
# Run: docker run -v /var/log/platform:/var/log/platform:ro -v logferry-data:/var/lib/logferry \
#        -v ./logferry.toml:/etc/logferry/logferry.toml:ro logferry
#
# Without a registry (scripts/image.sh): the runtime base built from Debian packages and a
# binary built outside, in a context directory that holds only the file `logferry`:
#   podman build --format docker --build-arg RUNTIME=localhost/logferry-base:debian12 \
#     --build-arg BINARY=prebuilt -f Dockerfile <dir with logferry>
# (--format docker: the OCI image format has no HEALTHCHECK.)

# The toolchain the project is built and tested with.
ARG BUILDER=rust:1.95.0-slim-bookworm
# glibc and libgcc only, no shell, no package manager; runs as uid 65532.
ARG RUNTIME=gcr.io/distroless/cc-debian12:nonroot
# Where the binary comes from: "build" compiles it from the sources in the context, "prebuilt"
# takes the file `logferry` at the root of the context.
ARG BINARY=build

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin logferry \
    && strip target/release/logferry \
    && install -D -m 0755 target/release/logferry /out/logferry \
    && install -d -m 0700 /out/data

# The context holds the file `logferry` (scripts/image.sh makes it); WORKDIR makes the empty
# folder the runtime stage takes for /var/lib/logferry.
FROM scratch AS prebuilt
WORKDIR /out/data
COPY logferry /out/logferry

# Only the stage BINARY names is built: BuildKit and buildah skip unused stages. buildah (podman
# 4.3) tells them apart by --build-arg values, not ARG defaults: give BINARY explicitly there.
FROM ${BINARY} AS binary

FROM ${RUNTIME}
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Tails audit and job logs, masks them, ships them batched and compressed to S3, Azure Blob, Azure Monitor or HTTP with at-least-once delivery" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/logferry"
COPY --from=binary /out/logferry /usr/local/bin/logferry
# Owned by the user in the image: Docker gives a new named volume the ownership of the folder it
# is mounted on, so a fresh volume is writable by 65532 (a root-owned one would refuse the start).
COPY --from=binary --chown=65532:65532 /out/data /var/lib/logferry
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
