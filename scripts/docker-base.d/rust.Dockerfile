# rust:1-slim-bookworm, as scripts/docker-base builds it from Debian's packages where no registry
# is reachable. Like the official image: cargo and rustc on PATH, gcc and libc6-dev for build
# scripts, CARGO_HOME=/usr/local/cargo; Rust is Debian's rustc-web/cargo-web from
# bookworm-security (1.89 or later is what Cargo.lock needs; bookworm's plain `rustc` is 1.63).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates rustc-web cargo-web gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL dev.sluice.docker-base="rust"
CMD ["bash"]
