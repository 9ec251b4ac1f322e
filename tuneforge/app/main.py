"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tuneforge.app.apidocs import install_offline_docs
from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.core.guards import RejectNulMiddleware
from tuneforge.app.core.http_errors import install_error_handlers
from tuneforge.app.core.logging import RequestIdMiddleware
from tuneforge.app.core.loops import Loop
from tuneforge.app.files.endpoints import router as files_router
from tuneforge.app.graders.endpoints import router as graders_router
from tuneforge.app.health.endpoints import router as health_router
from tuneforge.app.inference.endpoints import router as inference_router
from tuneforge.app.jobs.endpoints import router as jobs_router
from tuneforge.app.models.endpoints import router as models_router
from tuneforge.app.permissions.endpoints import router as permissions_router
from tuneforge.app.sweeps.endpoints import router as sweeps_router
from tuneforge.app.ui import install_dashboard
from tuneforge.app.uploads.endpoints import router as uploads_router
from tuneforge.app.webhooks.endpoints import router as webhooks_router

log = logging.getLogger("tuneforge.api")


def create_api_app() -> FastAPI:
    """The factory `tuneforge api --workers N` gives uvicorn: each process runs the background loops
    that TUNEFORGE_DISABLED_LOOPS (which `--no-reconciler` sets) leaves on."""
    return create_app(run_loops=True)


def background_loops(settings: Settings) -> list[Loop]:
    """The API process's loops (reconciler, sweeps, webhooks, uploads), less those TUNEFORGE_DISABLED_LOOPS
    names."""
    from tuneforge.app.jobs.dispatch import publish
    from tuneforge.app.jobs.reconciler import Reconciler
    from tuneforge.app.sweeps.driver import SweepDriver
    from tuneforge.app.uploads.sweeper import UploadSweeper
    from tuneforge.app.webhooks.deliverer import Deliverer

    made: list[Loop] = [
        Reconciler(settings, publish),
        SweepDriver(settings, publish),
        Deliverer(settings),
        UploadSweeper(settings),
    ]
    return [loop for loop in made if loop.loop_name not in settings.disabled_loops]


def create_app(*, run_loops: bool = False) -> FastAPI:
    """The application; with `run_loops`, its lifespan runs the background loops (`tuneforge api`,
    `tuneforge up`), which the tests' in-process clients leave to the live API process."""
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        loops = background_loops(settings) if run_loops else []
        for loop in loops:
            loop.start()
        yield
        for loop in loops:
            loop.stop()

    app = FastAPI(
        title="Tuneforge",
        version="0.1.0",
        summary="QLoRA fine-tuning jobs behind an OpenAI-compatible API.",
        lifespan=lifespan,
        docs_url=None,  # served by install_offline_docs, without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: guards' answers carry the id
    app.include_router(health_router)
    app.include_router(files_router)
    app.include_router(uploads_router)
    app.include_router(jobs_router)
    app.include_router(graders_router)
    install_offline_docs(app, title=app.title)
    app.include_router(inference_router)
    app.include_router(webhooks_router)
    app.include_router(sweeps_router)
    app.include_router(models_router)
    app.include_router(permissions_router)
    install_dashboard(app)
    return app
