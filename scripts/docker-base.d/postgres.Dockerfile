# postgres:15-bookworm, as scripts/docker-base builds it from Debian's postgresql-15 where no
# registry is reachable. It behaves as the official image does for what compose.yaml and users
# rely on: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (and their _FILE forms),
# POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, /docker-entrypoint-initdb.d, PGDATA at
# /var/lib/postgresql/data as a volume, the postgres user as uid 999, pg_isready on PATH,
# STOPSIGNAL SIGINT (a fast shutdown).
FROM debian:bookworm-slim
# uid/gid 999 as in the official image, so a data volume moves between the two.
RUN groupadd -r -g 999 postgres \
    && useradd -r -g postgres -u 999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres \
    && mkdir -p /var/lib/postgresql && chown postgres:postgres /var/lib/postgresql
# postgresql-common first, told not to create a cluster at install (the entrypoint makes one in
# PGDATA on first start); the sample config listens on every address, as the official one does.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/share/postgresql/15/postgresql.conf.sample \
    && grep -F "listen_addresses = '*'" /usr/share/postgresql/15/postgresql.conf.sample \
    && mkdir -p /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown postgres:postgres /var/run/postgresql && chmod 3777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
RUN mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
VOLUME /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
LABEL dev.sluice.docker-base="postgres"
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
