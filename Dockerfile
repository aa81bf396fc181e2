# syntax=docker/dockerfile:1
# Marina's container image: `docker build -t marina:0.1.0 .`
#
# Two stages: the Rust toolchain builds `marina` in release mode, and the runtime stage is
# distroless (glibc, CA certificates, no shell, no package manager) running as the numeric
# non-root user 65532. Nothing is written to the image's filesystem at run time, so it runs with
# a read-only root filesystem (the Helm chart mounts an emptyDir at /tmp). No secret is baked in:
# the Redis URL, the cluster secret and the tenants' credentials come from the environment or
# mounted files at run time. helm/marina's values must agree with the ports, the binary path and
# the user below (tests/helm/run.sh checks them).
#
# Pin the base images by digest in your registry for reproducible builds
# (FROM rust:1.95-bookworm@sha256:…).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# aws-lc-rs (rustls' crypto provider) compiles C code: the image has a C compiler; cmake is
# added for the aws-lc-sys builds that ask for it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin marina \
 && install -D -m 0755 target/release/marina /out/marina

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/marina /usr/local/bin/marina
USER 65532:65532
# 8080: MCP (/t/<tenant>/mcp, /healthz, /readyz); 9090: admin API and /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/marina"]
# The built-in default binds 127.0.0.1, unreachable from outside a container: `docker run` serves
# MCP on every interface (the admin listener stays on loopback until configured). No ENV MARINA__…
# here: environment variables override the configuration file, and would override the chart's
# (which replaces these arguments with `serve --config /etc/marina/marina.yaml`).
CMD ["serve", "--bind", "0.0.0.0:8080"]
