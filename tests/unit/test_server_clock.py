"""The control plane's run clock: it sweeps when a deadline falls or a change wakes it,
and never spins, not even while the server shuts down (when every wake-up is set)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tower.server import app
from tower.server.dispatch.notifier import Notifier
from tower.server.services import lifecycle


def _sweeps_in(seconds: float, *, closing: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many sweeps the clock makes in `seconds` with no deadline pending."""
    sweeps: list[object] = []

    def sweep_once(ctx: object) -> float:
        sweeps.append(ctx)
        return lifecycle.CLOCK_MAX_SLEEP_S  # nothing due

    monkeypatch.setattr(app, "_sweep_once", sweep_once)

    async def run() -> None:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        if closing:
            notifier.close()
        clock = asyncio.create_task(app._run_clock(SimpleNamespace(notifier=notifier)))
        await asyncio.sleep(seconds)
        if not closing:  # a change to a deadline wakes it early
            notifier.notify(lifecycle.CLOCK_TOPIC)
            await asyncio.sleep(0.1)
        clock.cancel()
        with pytest.raises(asyncio.CancelledError):
            await clock

    asyncio.run(run())
    return len(sweeps)


def test_the_clock_sleeps_until_woken_or_due(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _sweeps_in(0.3, closing=False, monkeypatch=monkeypatch) == 2


def test_the_clock_does_not_spin_while_the_server_shuts_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Closing sets every wake-up at once: waiting on one would return at once, forever.
    assert _sweeps_in(0.5, closing=True, monkeypatch=monkeypatch) == 1
