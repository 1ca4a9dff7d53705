"""The composition root of the control plane: `create_app(settings)` builds everything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tower.server import keys
from tower.server.api import apps, errors, misc, runner, runs
from tower.server.blobs import LocalBlobStore
from tower.server.services import runners as runners_service
from tower.server.services.context import ServerContext
from tower.server.settings import ServerSettings
from tower.server.store import db

logger = logging.getLogger(__name__)
REAPER_INTERVAL_S = 2.0


def build_context(settings: ServerSettings) -> ServerContext:
    """Open the database (migrated), keys and blobs; used by the app and by `tower up`."""
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    db.upgrade(url)
    engine = db.make_engine(url)
    master = keys.load_or_create_master_key(settings.master_key, home)
    return ServerContext(
        settings=settings,
        sessions=db.make_sessionmaker(engine),
        keys=keys.KeyRing(master),
        blobs=LocalBlobStore(settings.blobs_dir),
    )


async def _reap_lost_runs(ctx: ServerContext) -> None:
    while True:
        await asyncio.sleep(REAPER_INTERVAL_S)
        try:
            lost = await run_in_threadpool(runners_service.expire_lost_runs, ctx)
            for run_id in lost:
                logger.warning("run %s lost its runner", run_id, extra={"action": "run_lost"})
        except Exception:  # a failed sweep must not stop the next one
            logger.exception("lease sweep failed")


def create_app(settings: ServerSettings, context: ServerContext | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = app.state.context
        ctx.notifier.bind(asyncio.get_running_loop())
        reaper = asyncio.create_task(_reap_lost_runs(ctx))
        yield
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper

    app = FastAPI(
        title="Tower",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context or build_context(settings)
    errors.install(app)
    for module in (misc, apps, runs, runner):
        app.include_router(module.router)
    return app
