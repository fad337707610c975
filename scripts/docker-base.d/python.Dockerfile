# python:3.11-slim-bookworm, as scripts/docker-base builds it from Debian's packages where no
# registry is reachable: Debian bookworm's CPython 3.11 (the official image builds 3.11 from
# source into /usr/local). What the official image offers and sluice's Dockerfile uses is here:
# `python3` and `python` on PATH, the venv module, CA certificates, LANG=C.UTF-8, CMD python3.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates netbase tzdata \
        python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
LABEL dev.sluice.docker-base="python"
CMD ["python3"]
