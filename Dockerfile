# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer (cached until Cargo.toml or
# Cargo.lock change), then the sources.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# 1. Dependencies only: dummy crates with the real manifests (every target they declare needs a
#    file: the root binary and library, each member crate's library and build script, and every
#    [[bench]], hence the loops; a test checks the lists match the workspace).
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml ./crates/core/
COPY crates/store/Cargo.toml ./crates/store/
COPY crates/containment/Cargo.toml ./crates/containment/
COPY crates/engine/Cargo.toml ./crates/engine/
COPY crates/clients/Cargo.toml ./crates/clients/
COPY crates/jobs/Cargo.toml ./crates/jobs/
COPY crates/sim/Cargo.toml ./crates/sim/
COPY crates/admin/Cargo.toml ./crates/admin/
RUN mkdir -p src benches examples \
    && echo 'fn main() {}' > src/main.rs \
    && echo '' > src/lib.rs \
    && for c in core store containment engine clients jobs sim admin; do mkdir -p "crates/$c/src" && echo '' > "crates/$c/src/lib.rs"; done \
    && echo 'fn main() {}' > crates/store/build.rs \
    && for b in scheduler soar batch soak cluster jobs_page tcex; do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked --bin soarjobd \
    && rm -rf src benches examples crates/*/src crates/store/build.rs
# 2. The real sources (the migrations, in crates/store/migrations/, are embedded by the store
#    crate at compile time).
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY examples ./examples
RUN touch src/main.rs src/lib.rs crates/*/src/lib.rs crates/store/build.rs \
    && cargo build --release --locked --bin soarjobd

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin soarjobd-jobs \
    && mkdir -p /etc/soarjobd/jobs /var/lib/soarjobd \
    && chmod 0700 /var/lib/soarjobd
COPY --from=builder /src/target/release/soarjobd /usr/local/bin/soarjobd
COPY deploy/container.yaml /etc/soarjobd/soarjobd.yaml
COPY jobs/ /etc/soarjobd/jobs/
# The daemon runs as root so that job processes run as another user (`exec.user`): a job then
# cannot read the daemon's memory or environment, signal it, or read its state and credential
# files (mount secrets as files readable by root only, e.g. mode 0400, and name them in the
# `*_file` keys). Job processes run as `soarjobd-jobs`; give that user what the jobs need.
ENV SOARJOBD_CONFIG=/etc/soarjobd/soarjobd.yaml \
    SOARJOBD__EXEC__USER=soarjobd-jobs
VOLUME ["/etc/soarjobd", "/var/lib/soarjobd"]
WORKDIR /var/lib/soarjobd
# tini reaps the process groups of `exec` jobs and forwards SIGTERM to the daemon, which then
# shuts down gracefully.
# The admin server listens on 127.0.0.1:9180 in the container (`admin.listen`); the health
# check asks its `/livez` from inside, with the binary itself (the image has no curl). To scrape
# metrics or probe from outside, set `admin.listen: 0.0.0.0:9180` and the token files.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/soarjobd", "probe"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/soarjobd"]
CMD ["run"]
