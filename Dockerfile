# One image for both planes:
#   docker run ... tower-oss tower server          (control plane)
#   docker run ... tower-oss tower runner start    (a runner; needs TOWER_URL, TOWER_RUNNER_TOKEN)
# A runner container needs --cap-add SYS_ADMIN (or --privileged) for bubblewrap's namespaces;
# without them it warns once and applies resource limits only.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap ca-certificates git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir uv \
    && uv pip install --system --no-cache '.[server]'

ENV TOWER_HOME=/var/lib/tower \
    TOWER_HOST=0.0.0.0 \
    TOWER_PORT=8000
VOLUME ["/var/lib/tower"]
EXPOSE 8000
WORKDIR /var/lib/tower
CMD ["tower", "server"]
