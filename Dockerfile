# eds-server as a container: `python -m eds_server` (gunicorn) on :8080, the
# registry in a sqlite file under /app/data (a volume in docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements.txt .
RUN pip install -r requirements.txt

# `python -m eds_server` runs from the source tree in the working directory.
COPY eds_server ./eds_server
RUN useradd --system --uid 10001 eds && mkdir data && chown eds data
USER eds

EXPOSE 8080
VOLUME ["/app/data"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# The default store, sqlite:///data/registry.db, is /app/data/registry.db.
CMD ["python", "-m", "eds_server", "--host", "0.0.0.0", "--port", "8080"]
