"""The baseline of bench_api_latency.py: one FastAPI route and nothing else, served by the same
uvicorn command as the services, so a ratio to it says what FAMA's own work costs."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def bare() -> dict:
    return {"status": "ok"}
