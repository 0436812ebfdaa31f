# syntax=docker/dockerfile:1
#
# rolesync and the Genesys Cloud emulator, from one workspace build.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) \
#       -t rolesync:0.1.0 .
#   docker build --target emulator -t genesys-cloud-emulator:0.1.0 .
#
# Dependencies are compiled in a layer of their own (cargo-chef): it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change. `.dockerignore` keeps target/
# and .git out of the build context, so the git commit comes in as the GIT_SHA build argument
# (`rolesync_build_info{git_sha}`; "unknown" without it).
#
# The final images hold the binary, CA certificates (reqwest reads the system trust store) and,
# for rolesync, the default policy; they run as uid 10001. The rolesync image names no target:
# its defaults are compiled in, and `serve` refuses to start until a target is configured
# (mount a config file and run `serve --config FILE`, or set ROLESYNC__TARGET__* variables).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: cached while the recipe (manifests and lock file) is unchanged.
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
ARG GIT_SHA=unknown
ENV ROLESYNC_GIT_SHA=${GIT_SHA}
# The release profile keeps line tables (133 MB for rolesync); the image keeps the symbols, so a
# backtrace still names its functions, and drops the rest (28 MB).
RUN cargo build --release --locked -p rolesync --bin rolesync \
    && cargo build --release --locked -p genesys-cloud-emulator --bin genesys-cloud-emulator \
    && strip --strip-debug target/release/rolesync target/release/genesys-cloud-emulator

# Debian slim plus CA certificates: the smallest base here with the C runtime the binary links
# (glibc, libgcc_s) and a trust store.
FROM debian:bookworm-slim AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 10001 rolesync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent rolesync
ARG VERSION=0.1.0
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

# The emulator, as a SCIM target for the local stack (deploy/compose.yaml).
FROM base AS emulator
LABEL org.opencontainers.image.title="genesys-cloud-emulator" \
      org.opencontainers.image.description="An in-memory Genesys Cloud org (OAuth, SCIM users, roles, rate limits) for testing rolesync"
COPY --from=build /src/target/release/genesys-cloud-emulator /usr/local/bin/genesys-cloud-emulator
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["genesys-cloud-emulator"]
CMD ["--bind", "0.0.0.0:9090"]

# rolesync: the default target (`docker build .`).
FROM base AS runtime
LABEL org.opencontainers.image.title="rolesync" \
      org.opencontainers.image.description="Keeps Genesys Cloud user roles in step with an HR system"
COPY --from=build /src/target/release/rolesync /usr/local/bin/rolesync
# No configuration file: one holding the development [target] would be passed as --config and
# count as naming a target. The defaults are compiled into the binary.
COPY config/policy.toml /etc/rolesync/
# Uploads are spooled to $TMPDIR; with a read-only root file system mount a volume there.
# /var/lib/rolesync holds the SQLite file when no PostgreSQL URL is given.
RUN mkdir -p /var/lib/rolesync && chown 10001:10001 /var/lib/rolesync
WORKDIR /var/lib/rolesync
USER 10001:10001
ENV ROLESYNC__SERVER__BIND=0.0.0.0:8080 \
    ROLESYNC__POLICY__FILE=/etc/rolesync/policy.toml \
    ROLESYNC__LOG__FORMAT=json \
    TMPDIR=/tmp
EXPOSE 8080
ENTRYPOINT ["rolesync"]
# Without a target (target.scim_base and credentials from a --config file or ROLESYNC__TARGET__*)
# this exits 1 naming the keys to set; deploy/ passes `serve --config /etc/rolesync-site/rolesync.toml`.
CMD ["serve"]
