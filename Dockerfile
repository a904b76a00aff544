# Xiajiao in a container: slim Python, a non-root user, data in a volume, health checked on /health.
#   docker build -t xiajiao .
#   docker run -p 18800:18800 -v xiajiao-data:/data -e XIAJIAO_OWNER_PASSWORD=change-me xiajiao
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XIAJIAO_HOST=0.0.0.0 \
    XIAJIAO_PORT=18800 \
    XIAJIAO_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY xiajiao ./xiajiao
COPY plugins ./plugins
COPY web ./web
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin xiajiao \
    && mkdir -p /data && chown xiajiao:xiajiao /data

USER xiajiao
WORKDIR /data
VOLUME ["/data"]
EXPOSE 18800
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:18800/health', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["xiajiao", "serve"]
