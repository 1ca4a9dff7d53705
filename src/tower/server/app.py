"""The composition root of the control plane: `create_app(settings)` builds everything."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tower.core import errors
from tower.server import keys, tls
from tower.server.api import (
    account,
    api_keys,
    apps,
    audit,
    catalogs,
    environments,
    guests,
    listing,
    login_page,
    misc,
    runner,
    runners,
    runs,
    schedules,
    secrets,
    service_accounts,
    sessions,
    stats,
    teams,
    waits,
)
from tower.server.api import errors as api_errors
from tower.server.api.ratelimit import RateLimitMiddleware
from tower.server.blobs import LocalBlobStore
from tower.server.dispatch.notifier import pause
from tower.server.ratelimit import RateLimiter
from tower.server.scheduler.loop import run_scheduler
from tower.server.services import lifecycle, vault
from tower.server.services.context import ServerContext
from tower.server.settings import ServerSettings
from tower.server.store import db
from tower.server.store.types import utcnow

logger = logging.getLogger(__name__)


def build_context(settings: ServerSettings) -> ServerContext:
    """Open the database (migrated), keys and blobs; used by the app and by `tower up`."""
    tls.check_settings(settings)
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    if settings.storage_url and not settings.storage_url.startswith("file://"):
        raise errors.InvalidInput(
            f"TOWER_STORAGE_URL={settings.storage_url!r} is not supported yet: "
            "use a file:// directory (or leave it unset for $TOWER_HOME/blobs)."
        )
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


#: the clock sleeps at least this long between sweeps (s)
CLOCK_MIN_SLEEP_S = 0.01


def _sweep_once(ctx: ServerContext) -> float:
    """Act on due deadlines; the seconds until the next one (capped)."""
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        next_due = lifecycle.sweep(session, wake)
    wake.fire(ctx.notifier)
    if next_due is None:
        return lifecycle.CLOCK_MAX_SLEEP_S
    wait = (next_due - utcnow()).total_seconds()
    return min(max(wait, 0.0), lifecycle.CLOCK_MAX_SLEEP_S)


async def _run_clock(ctx: ServerContext) -> None:
    """Retries come due, pending and running timeouts pass, leases expire: act on each
    at its moment. Sleeps until the next deadline; a new one (e.g. a retry scheduled)
    wakes it early."""
    while True:
        with ctx.notifier.listen(lifecycle.CLOCK_TOPIC) as woken:
            try:
                wait = await run_in_threadpool(_sweep_once, ctx)
            except Exception:  # a failed sweep must not stop the next one
                logger.exception("run clock sweep failed")
                wait = lifecycle.CLOCK_MAX_SLEEP_S
            # Deadlines are stored at sub-second precision; don't spin on one just due.
            await pause(ctx.notifier, woken, max(wait, CLOCK_MIN_SLEEP_S))


def load_server_keys(ctx: ServerContext) -> None:
    """Create or open the server's long-term keys before the first request, so no use
    case ever makes one inside its own write transaction."""
    vault.server_private_key(ctx)
    vault.package_signing_key(ctx)
    vault.runner_ca(ctx)


def _extend_leases(ctx: ServerContext) -> None:
    with ctx.sessions.begin() as session:
        renewed = lifecycle.extend_leases_after_restart(session, ctx.settings.lease_ttl_seconds)
    if renewed:
        logger.info("gave %d runs in progress a fresh lease after the restart", renewed)


class TowerServer(uvicorn.Server):
    """uvicorn, but long polls and log streams end as soon as shutdown begins, instead
    of holding the graceful-shutdown window open until they are cancelled.

    Under mutual TLS it also runs the runner listener (`runner_listener`) in the same
    event loop: it starts once the API is up (keys loaded) and stops with it.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        context: ServerContext,
        runner_listener: uvicorn.Server | None = None,
    ) -> None:
        super().__init__(config)
        self.context = context
        self.runner_listener = runner_listener

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.context.notifier.close()
        if self.runner_listener is not None:
            self.runner_listener.should_exit = True
        super().handle_exit(sig, frame)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.runner_listener is None:
            await super().serve(sockets)
            return
        with self.capture_signals():
            runners = asyncio.create_task(self._serve_runner_listener(self.runner_listener))
            try:
                await self._serve(sockets)
            finally:
                self.runner_listener.should_exit = True
                await runners

    async def _serve_runner_listener(self, listener: uvicorn.Server) -> None:
        while not self.started and not self.should_exit:
            await asyncio.sleep(0.05)
        if not self.should_exit:
            # `_serve`, not `serve`: the API server already owns the signal handlers.
            await listener._serve()


def serve(settings: ServerSettings, context: ServerContext) -> TowerServer:
    """A server for `create_app(settings, context)` on the configured host and port
    (HTTPS with a certificate; plus the runner listener under mutual TLS)."""
    app = create_app(settings, context)
    common = {"host": settings.host, "log_level": settings.log_level, "access_log": False}
    config = uvicorn.Config(
        app,
        port=settings.port,
        timeout_graceful_shutdown=5,
        **common,
        **tls.ssl_options(settings),
    )
    runner_listener = None
    if settings.runner_mtls_required:
        _, ca_certificate = vault.runner_ca(context)
        runner_config = uvicorn.Config(
            app,
            # The API listener runs the app's start-up and shutdown; this one only serves.
            lifespan="off",
            timeout_graceful_shutdown=5,
            **common,
            **tls.runner_listener_options(settings, ca_certificate),
        )
        runner_listener = uvicorn.Server(runner_config)
    return TowerServer(config, context, runner_listener)


def create_app(settings: ServerSettings, context: ServerContext | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = app.state.context
        ctx.notifier.bind(asyncio.get_running_loop())
        await run_in_threadpool(load_server_keys, ctx)
        await run_in_threadpool(_extend_leases, ctx)
        clock = asyncio.create_task(_run_clock(ctx))
        scheduler = (
            asyncio.create_task(run_scheduler(ctx)) if ctx.settings.scheduler_enabled else None
        )
        gc.freeze()
        yield
        for task in (clock, scheduler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="Tower",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context or build_context(settings)
    api_errors.install(app)
    # Routes are matched in order: the runner protocol, called for every run, first.
    # Each module's routes are added as they are, not through `include_router`: the
    # routers carry their full paths already, and FastAPI (0.16x) would keep included
    # routes behind a lazily built second copy of each one: about 4 ms of CPU per
    # route at its router's first request (half a second in all), and about 1 ms of
    # matching work on every request.
    for module in (
        runner,
        misc,
        apps,
        runs,
        listing,
        stats,
        waits,
        environments,
        secrets,
        catalogs,
        api_keys,
        runners,
        teams,
        service_accounts,
        guests,
        audit,
        sessions,
        account,
        login_page,
        schedules,
    ):
        app.router.routes.extend(module.router.routes)
    if settings.runner_mtls_required and settings.runner_port:
        app.add_middleware(tls.RunnerListenerGuard, runner_port=settings.runner_port)
    if settings.rate_limited:
        limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    return app
