# One image for every FAMA process: APIs, workers, schedulers, migrations.
FROM python:3.11-slim

# MALLOC_ARENA_MAX=2: glibc gives every thread that allocates its own heap arena (up to 8 a core),
# and an API's worker threads left each arena half empty: ~10 MB more per process (docs/PERFORMANCE.md §9).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 FAMA_ENV=production MALLOC_ARENA_MAX=2
RUN useradd --create-home --uid 10001 fama
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY fama ./fama
RUN pip install --upgrade pip && pip install . flower
USER fama
EXPOSE 8001 8002 8003
CMD ["fama", "--help"]
