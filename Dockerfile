# syntax=docker/dockerfile:1
# authz-service as a container image. docs/operations.md "Deploying" explains each choice;
# the tests in tests/integration/test_deploy_files.py check this file against that page and
# run its entrypoint and healthcheck commands outside Docker.
#
#   docker build -t authz-service .
#   docker run -v authz-data:/data -p 127.0.0.1:50051:50051 authz-service

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: the project and its pinned dependencies, installed into a virtual environment
# that the runtime stage copies whole (no sources, pip caches or build tools there).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/authz
COPY pyproject.toml requirements.lock README.md ./
COPY protos/ protos/
COPY authz_service/ authz_service/
COPY clients/ clients/
RUN /opt/authz/bin/pip install --constraint requirements.lock .

# Runtime stage: slim Python, the virtual environment, and an unprivileged user that owns
# only /data (the database, its WAL and the server key).
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid authz --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin authz \
 && install --directory --owner=authz --group=authz --mode=0700 /data
COPY --from=build /opt/authz /opt/authz
ENV PATH="/opt/authz/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_VERBOSITY=ERROR \
    AUTHZ_LISTEN=0.0.0.0:50051 \
    AUTHZ_DB=/data/authz.db
# Numeric, so an orchestrator's "run as non-root" check can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051
# The gRPC health service, asked by the image's own command: no probe binary to download.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["authz-service", "healthcheck"]
ENTRYPOINT ["authz-service"]
CMD ["serve"]
