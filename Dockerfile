# syntax=docker/dockerfile:1
#
# The `grin` image: one binary for `grin migrate`, `grin serve` and
# `grin worker` (and the offline commands).
#
#   docker build -t grin .                                  # CPU image (target `runtime`, the default)
#   docker build -t grin:cuda --target cuda-runtime \
#       --build-arg CUDA_COMPUTE_CAP=90 .                   # CUDA worker (Hopper; 80 = Ampere)
#   docker build --build-arg GRIN_GIT_COMMIT=$(git rev-parse HEAD) ...   # record the commit in certificates
#
# Stages: chef (Rust + cargo-chef) -> planner (dependency recipe) -> builder
# (dependencies cooked in their own cached layer, then the workspace) ->
# runtime (debian:bookworm-slim, non-root). The cuda-builder / cuda-runtime
# pair does the same on NVIDIA's CUDA devel / runtime images. BuildKit (the
# default builder since Docker 23) builds only the stages a target needs.
# See docs/deploy.md.

ARG RUST_VERSION=1.95
ARG CUDA_VERSION=12.6.3
ARG CUDA_UBUNTU=ubuntu24.04

# ---------------------------------------------------------------- toolchain
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
 && rm -rf /usr/local/cargo/registry
WORKDIR /src

# ------------------------------------------------ dependency recipe (cheap)
FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo chef prepare --recipe-path recipe.json

# ------------------------------------------------------------- CPU builder
FROM chef AS builder
# Cargo features of grin-cli (empty: the CPU build).
ARG GRIN_FEATURES=""
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml / Cargo.lock change.
RUN cargo chef cook --release --locked -p grin-cli \
        ${GRIN_FEATURES:+--features "$GRIN_FEATURES"} --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# sqlx::migrate! embeds these at compile time.
COPY migrations migrations
# The build context has no .git: pass the commit for certificates explicitly.
ARG GRIN_GIT_COMMIT=""
RUN if [ -z "$GRIN_GIT_COMMIT" ]; then unset GRIN_GIT_COMMIT; fi \
 && cargo build --release --locked -p grin-cli ${GRIN_FEATURES:+--features "$GRIN_FEATURES"} \
 && install -D -m 0755 target/release/grin /out/grin

# ------------------------------------------------------------ CUDA builder
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_UBUNTU} AS cuda-builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The same Rust toolchain and cargo-chef as the chef stage (built on Debian 12,
# glibc 2.36; Ubuntu 24.04 has 2.39, so the copied cargo-chef binary runs).
COPY --from=chef /usr/local/rustup /usr/local/rustup
COPY --from=chef /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:$PATH \
    CUDA_ROOT=/usr/local/cuda
# No GPU during `docker build`: candle's kernel build cannot ask nvidia-smi.
# 80 = Ampere (A100, also runs on Hopper through PTX JIT), 89 = Ada, 90 = Hopper (H100/H200).
ARG CUDA_COMPUTE_CAP=80
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
# grin-cli's `cuda` feature forwards to grin-worker/cuda, grin/cuda (candle-core + candle-nn kernels).
ARG GRIN_CUDA_FEATURES=cuda
WORKDIR /src
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p grin-cli --features "$GRIN_CUDA_FEATURES" --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY migrations migrations
ARG GRIN_GIT_COMMIT=""
RUN if [ -z "$GRIN_GIT_COMMIT" ]; then unset GRIN_GIT_COMMIT; fi \
 && cargo build --release --locked -p grin-cli --features "$GRIN_CUDA_FEATURES" \
 && install -D -m 0755 target/release/grin /out/grin

# ------------------------------------------------------------ CUDA runtime
# cublas, cublasLt, curand and nvrtc come with the runtime image; libcuda is
# mounted by the NVIDIA container toolkit (`--gpus`, or the compose `gpu` profile).
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_UBUNTU} AS cuda-runtime
COPY --from=cuda-builder /out/grin /usr/local/bin/grin
COPY deploy/docker/healthcheck.sh /usr/local/bin/grin-healthcheck
RUN chmod 0755 /usr/local/bin/grin-healthcheck \
 && groupadd --system --gid 10001 grin \
 && useradd --system --uid 10001 --gid grin --home-dir /data --no-create-home --shell /usr/sbin/nologin grin \
 && mkdir -p /data/checkpoints /models \
 && chown -R grin:grin /data
ENV GRIN_DATABASE_URL="sqlite:///data/grin.db?mode=rwc" \
    GRIN_CHECKPOINT_ROOT=/data/checkpoints \
    GRIN_BIND=0.0.0.0:8080 \
    GRIN_DEVICE=cuda \
    GRIN_LOG=warn,grin=info
WORKDIR /data
USER grin:grin
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/grin-healthcheck"]
ENTRYPOINT ["/usr/local/bin/grin"]
CMD ["worker"]

# ---------------------------------------------------------- CPU runtime (default)
FROM debian:bookworm-slim AS runtime
COPY --from=builder /out/grin /usr/local/bin/grin
# No curl or wget in the image: the health check is a bash script that speaks
# HTTP/1.0 over bash's /dev/tcp (bash and coreutils are part of every Debian image).
COPY deploy/docker/healthcheck.sh /usr/local/bin/grin-healthcheck
RUN chmod 0755 /usr/local/bin/grin-healthcheck \
 && groupadd --system --gid 10001 grin \
 && useradd --system --uid 10001 --gid grin --home-dir /data --no-create-home --shell /usr/sbin/nologin grin \
 && mkdir -p /data/checkpoints /models \
 && chown -R grin:grin /data
# Defaults for a single container; the compose stack sets Postgres.
ENV GRIN_DATABASE_URL="sqlite:///data/grin.db?mode=rwc" \
    GRIN_CHECKPOINT_ROOT=/data/checkpoints \
    GRIN_BIND=0.0.0.0:8080 \
    GRIN_LOG=warn,grin=info
WORKDIR /data
USER grin:grin
EXPOSE 8080
# Probes GET /readyz when the container runs `grin serve`; for `worker`,
# `migrate` and one-off commands it reports healthy while the process runs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/grin-healthcheck"]
ENTRYPOINT ["/usr/local/bin/grin"]
CMD ["serve"]
