# The analytics_platform code-location image.
#
# One image serves the code location (gRPC `dagster code-server`, the default command
# below) and runs every run worker the K8sRunLauncher starts (Dagster overrides the
# command with `dagster api execute_run ...`). The webserver and daemon can run from it
# too (`dagster-webserver` / `dagster-daemon run`), or from Dagster's own images with the
# Helm chart (deploy/README.md).
#
# Production settings come from the environment only (deploy/values.yaml: a ConfigMap for
# settings, a Secret for secrets); nothing secret is baked in.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    ANALYTICS_ENV=prod

WORKDIR /opt/dagster/app

# The package (its SQL files are package data) and the K8s run launcher's library, which
# the run workers need to load the instance configuration of a Kubernetes deployment.
COPY pyproject.toml setup.py README.md ./
COPY analytics_platform ./analytics_platform
RUN pip install . "dagster-k8s>=0.29,<0.30"

# Run-time files read relative to the working directory: the anomaly event config
# (EVENTS_CONFIG_PATH default) and the workspace for `dagster-webserver`/`dagster-daemon`.
COPY config ./config
COPY workspace.yaml ./

# The production instance (dagster.prod.yaml): PostgreSQL storage from DAGSTER_PG_*, compute
# logs in the GCS bucket DAGSTER_COMPUTE_LOGS_BUCKET, the run queue with the Mixpanel tag
# limits, run retries (see docs/operations.md). (./dagster.yaml is the local instance.)
RUN mkdir -p "$DAGSTER_HOME"
COPY dagster.prod.yaml ${DAGSTER_HOME}/dagster.yaml

RUN useradd --create-home --uid 10001 dagster \
    && chown -R dagster "$DAGSTER_HOME"
USER dagster

EXPOSE 3030
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "analytics_platform.definitions"]
