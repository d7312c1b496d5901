# eds-server as a container: `eds-server` (gunicorn) on :8080, the registry in a
# sqlite file under /app/data (a volume in docker-compose.yml). Installed as the
# tests in tests/install/ prove a venv works: requirements.txt's pins, then the
# package built from the checkout (with the console's files), run by its script.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The package, and nothing more: requirements.txt pins all it needs. Its sources
# go nowhere near the working directory, so what runs is the installed package.
COPY pyproject.toml README.md /tmp/eds-server/
COPY eds_server /tmp/eds-server/eds_server
RUN pip install --no-deps /tmp/eds-server && rm -r /tmp/eds-server

RUN useradd --system --uid 10001 eds && mkdir data && chown eds data
USER eds

EXPOSE 8080
VOLUME ["/app/data"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# The default store, sqlite:///data/registry.db, is /app/data/registry.db.
CMD ["eds-server", "--host", "0.0.0.0", "--port", "8080"]
