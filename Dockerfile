# The Upstream services (worker, sink, notifier, CLI) in one image; the command picks the role.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 upstream
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY streams ./streams
COPY schemas ./schemas
COPY sinks ./sinks
COPY notifier ./notifier
# The domain core is compiled with mypyc (setup.py): a C compiler for the build only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* /root/.cache

USER upstream
# Faust keeps its local table state here; a volume keeps it across restarts (faster recovery).
ENV UPSTREAM_WORKER_DATA_DIR=/home/upstream/worker-data
EXPOSE 8765 9100
ENTRYPOINT ["upstream"]
CMD ["--help"]
