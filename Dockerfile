# The sluice image: the gateway, its worker module and a Python with the examples' pinned
# packages. `docker compose up --build` (compose.yaml) serves the examples with it; for an app
# of your own, `docker run -v "$PWD":/app -p 8000:8000 sluice serve myproject.wsgi --bind 0.0.0.0:8000`
# (README.md, "Docker"). Plain Dockerfile syntax, no BuildKit features: it builds the same with
# `docker build`, Compose v2 and docker-compose 1.29. Where no registry is reachable,
# scripts/docker-base makes the two base images from Debian's packages first.

# Build stage. Debian bookworm, as the runtime stage: a binary links against the glibc it was
# built with (2.36 here), and bookworm's is what the runtime stage has.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The worker module uses the stable ABI (abi3), so pyo3 needs no interpreter to build it.
ENV PYO3_NO_PYTHON=1 CARGO_TERM_COLOR=never

# Dependencies first, from the manifests and empty sources: this layer (most of the compile
# time) is reused until Cargo.toml or Cargo.lock change. tests and bench are workspace members
# the image does not build; their manifests must be there for cargo to read the workspace.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY worker/Cargo.toml worker/
COPY gateway/Cargo.toml gateway/
COPY tests/Cargo.toml tests/
COPY bench/axum-hello/Cargo.toml bench/axum-hello/
RUN mkdir -p proto/src worker/src gateway/src tests/src bench/axum-hello/src \
    && touch proto/src/lib.rs worker/src/lib.rs gateway/src/lib.rs tests/src/lib.rs \
    && echo 'fn main() {}' > gateway/src/main.rs \
    && echo 'fn main() {}' > bench/axum-hello/src/main.rs \
    && cargo build --release --locked -p sluice-gateway -p sluice-worker \
    && rm -rf proto/src worker/src gateway/src

COPY proto proto
COPY worker worker
COPY gateway gateway
# The empty sources above were compiled after these files were last changed; touching them
# makes cargo see them as newer and build the workspace's own crates again.
RUN find proto worker gateway -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p sluice-gateway -p sluice-worker \
    && mkdir /out \
    && cp target/release/sluice target/release/libsluice_worker.so /out/

# Runtime stage.
FROM python:3.11-slim-bookworm
# tini as PID 1: forwards SIGTERM to sluice and reaps every orphan (sluice reaps its own
# workers, but a process an app starts and abandons is re-parented to PID 1).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 sluice \
    && useradd --uid 10001 --gid sluice --create-home --home-dir /home/sluice --shell /usr/sbin/nologin sluice

# The workers run `python3` from PATH: this virtualenv, holding the examples' pinned packages.
# It belongs to the sluice user, so an image `FROM sluice` adds its own packages with a plain
# `RUN pip install -r requirements.txt` (README.md, "Docker").
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY examples/django/requirements.txt /tmp/requirements/django.txt
COPY examples/flask/requirements.txt /tmp/requirements/flask.txt
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --quiet -r /tmp/requirements/django.txt -r /tmp/requirements/flask.txt \
    && rm -rf /tmp/requirements \
    && chown -R sluice:sluice "$VIRTUAL_ENV"

COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build /out/libsluice_worker.so /usr/local/lib/sluice/libsluice_worker.so
ENV SLUICE_WORKER_MODULE=/usr/local/lib/sluice/libsluice_worker.so

# The examples, with collectstatic's hashed, precompressed files made here, once.
COPY examples /srv/examples
RUN cd /srv/examples/django \
    && python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q /srv/examples

# tini registers as a subreaper, so it reaps even where it is not PID 1 (`docker run --init`).
ENV TINI_SUBREAPER=1
USER 10001:10001
WORKDIR /app
EXPOSE 8000 8070 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "sluice"]
CMD ["--help"]
