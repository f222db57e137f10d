# Production image: build the release binary in the official Rust image,
# run it on distroless cc (glibc, libgcc, CA certificates, user nonroot =
# 65532, no shell). Needs BuildKit (Docker 23+ uses it by default) or
# buildah/podman for the cache mounts.
#
#   docker build -t nano-banana-mcp .
#   docker run --read-only --tmpfs /tmp --tmpfs /data -p 8080:8080 \
#     -e NANO_BANANA_AUTH_TOKEN=... -e NANO_BANANA_ALLOWED_HOSTS=localhost:8080 \
#     -e GEMINI_API_KEY=... nano-banana-mcp
#
# The server writes only to NANO_BANANA_OUTPUT_DIR (/data; unused when
# Azure is configured) and NANO_BANANA_TEMP_DIR (/tmp): mount both (tmpfs or
# emptyDir) and the root filesystem can be read-only. It handles SIGTERM
# itself (readiness off, calls drain for NANO_BANANA_SHUTDOWN_GRACE_SECS,
# exit 0), so it runs as PID 1 without an init wrapper.
#
# Where base images cannot be pulled, build Dockerfile.local from a binary
# built on the host (see that file); RUNTIME_BASE swaps the runtime base
# for any image with the same layout (glibc, /etc/passwd with 65532, CA bundle).
#
# Keep the two bases on the same Debian release (bookworm = debian12): the
# binary links glibc dynamically and will not start on an older glibc than
# the one it was built against.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# tikv-jemalloc-sys runs jemalloc's configure and make; the slim image has
# gcc and libc6-dev but no make. Debian's security updates replace package
# versions in place, so a pinned version would break the build within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore keeps target/, node_modules/ and .git/ out of the context.
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is
# copied out in the same step because the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin nano-banana-mcp \
 && install -D -m 0755 target/release/nano-banana-mcp /out/nano-banana-mcp \
 && mkdir -p /out/data

FROM ${RUNTIME_BASE} AS runtime
LABEL org.opencontainers.image.title="nano-banana-mcp" \
      org.opencontainers.image.description="Memory-aware MCP image server: Gemini image models into Azure Blob Storage or a local folder, streamed, never buffered whole" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/nano-banana-mcp /nano-banana-mcp
# /data exists and belongs to the runtime user, for runs without a
# read-only root filesystem; with one, mount a volume there.
COPY --from=build --chown=65532:65532 /out/data /data
ENV NANO_BANANA_OUTPUT_DIR=/data \
    NANO_BANANA_TEMP_DIR=/tmp \
    LOG_FORMAT=json
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
# No HEALTHCHECK: the image has no shell or curl; orchestrators probe
# GET /healthz (liveness) and GET /readyz (readiness) on port 8080.
ENTRYPOINT ["/nano-banana-mcp"]
CMD ["serve", "--http", "0.0.0.0:8080"]
