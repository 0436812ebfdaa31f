# Build: docker build -t rolesync .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 rolesync
COPY --from=build /src/target/release/rolesync /usr/local/bin/rolesync
COPY config /etc/rolesync
WORKDIR /var/lib/rolesync
RUN chown rolesync /var/lib/rolesync
USER rolesync
ENV ROLESYNC__SERVER__BIND=0.0.0.0:8080 \
    ROLESYNC__POLICY__FILE=/etc/rolesync/policy.toml \
    ROLESYNC__LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["rolesync"]
CMD ["serve", "--config", "/etc/rolesync/default.toml"]
