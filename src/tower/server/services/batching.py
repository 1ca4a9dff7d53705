"""Group commit: callers that write at the same moment share one transaction.

On SQLite one transaction writes at a time, and a request thread holding the write
lock spends most of that time waiting for the GIL behind the other request threads,
at every statement it sends. When four clients submit runs at once, three of them
queue on the lock while the fourth commits. A `Batcher` lets the waiting ones be
served by one transaction instead of three: the same rows, one lock hand-over, one
COMMIT.

No thread of its own: the caller that finds no batch in progress leads. It applies
every item waiting, its own included, then passes the lead to a caller that arrived
meanwhile and returns. A caller alone is served at once, exactly as without batching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: an outcome per item: its result, or the exception its caller raises
Outcomes = list[Result | Exception]

_INTERRUPTED = RuntimeError("the batch this item was part of was interrupted")


@dataclass(eq=False)
class _Slot(Generic[Item, Result]):
    item: Item
    #: set once the outcome is in, or once this caller is to lead the next batch
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    outcome: Result | Exception | None = None

    def result(self) -> Result:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]


class Batcher(Generic[Item, Result]):
    """Applies items handed in by concurrent callers in batches of up to `max_batch`.

    `apply_all(items)` returns one outcome per item, in order; an exception it raises
    becomes the outcome of every item of the batch."""

    def __init__(self, apply_all: Callable[[list[Item]], Outcomes], *, max_batch: int) -> None:
        self._apply_all = apply_all
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot[Item, Result]] = []
        self._leading = False

    def submit(self, item: Item) -> Result:
        """`item`'s result once applied (with whatever else was waiting), or its error."""
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            slot.leads = not self._leading
            self._leading = True
        if not slot.leads:
            slot.ready.wait()
        if slot.leads:
            self._lead(slot)
        return slot.result()

    def _lead(self, own: _Slot[Item, Result]) -> None:
        with self._lock:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
        outcomes: Outcomes = [_INTERRUPTED] * len(batch)
        try:
            outcomes = self._outcomes([slot.item for slot in batch])
        finally:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
            self._pass_lead()
            for slot in batch:
                if slot is not own:
                    slot.ready.set()

    def _outcomes(self, items: list[Item]) -> Outcomes:
        try:
            outcomes = self._apply_all(items)
        except Exception as failed:
            return [failed] * len(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(items)} items")
        return outcomes

    def _pass_lead(self) -> None:
        with self._lock:
            if not self._waiting:
                self._leading = False
                return
            successor = self._waiting[0]
        successor.leads = True
        successor.ready.set()
