# syntax=docker/dockerfile:1
# The pgrunbook worker image: `docker build -t pgrunbook .`, then `docker run pgrunbook` runs
# `pgrunbook worker` with the config at $PGRUNBOOK_CONFIG (mount it there). Any other command:
# `docker run pgrunbook schedules apply`, `docker run pgrunbook backup --database shop --wait`.
#
# Three stages: `build` compiles TypeScript and pre-builds the workflow bundle (dev dependencies
# included); `production-deps` installs only the production dependencies; the runtime stage gets
# those two results, the PostgreSQL client tools and nothing of the build toolchain.

ARG NODE_VERSION=24
ARG DEBIAN_RELEASE=bookworm

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` would build before the sources are copied; the
# dependencies' install scripts only check binaries that their optional platform packages ship.
# `npm install` when `npm ci` refuses the lockfile for lacking other platforms' optional packages
# (as in .ci/run); it installs the locked versions all the same.
RUN npm ci --ignore-scripts --no-audit --no-fund || npm install --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/node.sh ./scripts/node.sh
COPY activities ./activities
COPY app-controllers ./app-controllers
COPY bench ./bench
COPY client ./client
COPY config ./config
COPY encryption ./encryption
COPY notifications ./notifications
COPY pitr ./pitr
COPY postgres ./postgres
COPY process ./process
COPY report ./report
COPY repository ./repository
COPY schedules ./schedules
COPY stack ./stack
COPY worker ./worker
COPY workflows ./workflows
# tsc, then the workflow bundles (dist/workflow-bundle*.js), so the worker never runs webpack.
RUN npm run build && chmod 0755 dist/client/main.js

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS production-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN (npm ci --omit=dev --ignore-scripts --no-audit --no-fund || npm install --omit=dev --ignore-scripts --no-audit --no-fund) \
 && npm cache clean --force

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim
# PostgreSQL client majors, from the PGDG repository. pgrunbook picks, per server, the oldest
# installed pg_dump whose major is >= the server's (postgres/tools.ts), under
# /usr/lib/postgresql/<major>/bin: install every major you back up (--build-arg PG_MAJORS="13 17").
ARG PG_MAJORS="14 15 16 17 18"
# Optional PostgreSQL server majors (initdb, pg_ctl, postgres), for drills with target type
# cluster and point-in-time restores on the worker itself, e.g. --build-arg PG_SERVER_MAJORS=17.
ARG PG_SERVER_MAJORS=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Versions float with the PGDG and Debian repositories (their point releases are security fixes).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && packages=() \
 && for major in ${PG_MAJORS}; do packages+=("postgresql-client-${major}"); done \
 && for major in ${PG_SERVER_MAJORS}; do packages+=("postgresql-${major}"); done \
 && apt-get install -y --no-install-recommends "${packages[@]}" zstd age tar \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
 && groupadd --system --gid 10001 pgrunbook \
 && useradd --system --uid 10001 --gid pgrunbook --home-dir /home/pgrunbook --create-home --shell /usr/sbin/nologin pgrunbook \
 && install -d -o pgrunbook -g pgrunbook -m 0750 /var/tmp/pgrunbook /home/pgrunbook/.cache \
 && for major in ${PG_MAJORS}; do /usr/lib/postgresql/"${major}"/bin/pg_dump --version; done \
 && zstd --version && age --version

WORKDIR /app
COPY --from=production-deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
RUN ln -s /app/dist/client/main.js /usr/local/bin/pgrunbook

ENV NODE_ENV=production \
    PGRUNBOOK_CONFIG=/etc/pgrunbook/pgrunbook.yaml \
    TMPDIR=/var/tmp/pgrunbook
USER 10001:10001
# The metrics endpoint (config metrics: host 0.0.0.0, port 9464) also serves /healthz: 200 while
# the worker polls, 503 while it starts or drains.
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["pgrunbook"]
CMD ["worker"]
