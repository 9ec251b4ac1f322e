"""Baseline for the status-polling benchmark: a bare FastAPI endpoint returning a job row as JSON,
from the same database, with no auth, no ORM objects and no response model."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["BARE_DATABASE_URL"], pool_size=10)
app = FastAPI()


@app.get("/job/{job_id}")
def job(job_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
