"""The baseline FastAPI users write by hand: ``UploadFile``, an aiofiles copy, ``BackgroundTasks``
and a dict of jobs (the pattern of FastAPI's "Request Files" and "Background Tasks" tutorials).

Nothing is fsynced and a restart forgets every job: this is what filejobs is measured against, not
something to deploy. Run: ``uvicorn scripts.bench.apps.tutorial:app`` with ``TUTORIAL_DATA_DIR``.

With ``TUTORIAL_DURABLE=1`` (the bench's ``tutorial-durable``) the same app fsyncs each stored file
and then its directory before answering (each in a thread, as aiofiles does its calls): what making
the tutorial's bytes durable costs by itself, with nothing else of filejobs (its jobs are still a
dict, forgotten by a restart).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiofiles
from fastapi import BackgroundTasks, FastAPI, HTTPException, UploadFile

DATA_DIR = Path(os.environ.get("TUTORIAL_DATA_DIR", "tutorial-data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)
DURABLE = os.environ.get("TUTORIAL_DURABLE", "") == "1"
CHUNK = 1024 * 1024

app = FastAPI()
jobs: dict[str, dict[str, Any]] = {}


def process(job_id: str) -> None:
    """Trivial work, like the tutorial's: mark the job done."""
    job = jobs[job_id]
    job["status"] = "running"
    job["result"] = {"size": os.path.getsize(DATA_DIR / job_id)}
    job["status"] = "succeeded"


def fsync_dir(path: Path) -> None:
    """fsync a directory: the names created in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@app.post("/jobs", status_code=202)
async def create_job(file: UploadFile, background_tasks: BackgroundTasks) -> dict[str, Any]:
    job_id = uuid.uuid4().hex
    size = 0
    async with aiofiles.open(DATA_DIR / job_id, "wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            await out.write(chunk)
        if DURABLE:
            await out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
    if DURABLE:
        await asyncio.to_thread(fsync_dir, DATA_DIR)
    jobs[job_id] = {"id": job_id, "status": "queued", "file": {"name": file.filename, "size": size}}
    background_tasks.add_task(process, job_id)
    return jobs[job_id]


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> dict[str, Any]:
    if job_id not in jobs:
        raise HTTPException(status_code=404, detail="Job not found")
    return jobs[job_id]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
