"""One thread that reads the output pipes of every app the runner started.

Two reader threads per run (stdout, stderr) cost a busy runner more than the reading
itself: each is created, handed the GIL at every line and at end of file, and torn
down, and with a few runs a second the context switches of those threads were most
of the runner's. The pump waits on all pipes at once (epoll) and reads whichever are
ready, so a burst of runs costs one wake-up for all the output that arrived.

Lines are cut exactly as `readline(MAX_LINE_BYTES)` cuts them: at a newline, or after
`max_line_bytes` bytes of a longer line; what is left at end of file is a last line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import IO

logger = logging.getLogger(__name__)

#: the most bytes read from one pipe per wake-up (a pipe holds 64 KiB by default)
READ_CHUNK_BYTES = 64 * 1024

ChunkCallback = Callable[[bytes], None]


class _Pipe:
    """A pipe being read: its stream, the bytes of a line not yet ended, and whom to
    hand each line to."""

    def __init__(self, stream: IO[bytes], on_line: ChunkCallback, max_line_bytes: int) -> None:
        self.stream = stream
        self.fd = stream.fileno()
        self.on_line = on_line
        self.max_line_bytes = max_line_bytes
        self.pending = b""
        #: set once end of file was reached and every line handed over
        self.drained = threading.Event()

    def take(self, data: bytes) -> None:
        """Hand over every line `data` completes; keep the rest."""
        buffer, limit = self.pending + data, self.max_line_bytes
        start = 0
        while True:
            newline = buffer.find(b"\n", start, start + limit)
            if newline >= 0:
                end = newline + 1
            elif len(buffer) - start >= limit:
                end = start + limit
            else:
                break
            self._hand(buffer[start:end])
            start = end
        self.pending = buffer[start:]

    def finish(self) -> None:
        if self.pending:
            self._hand(self.pending)
            self.pending = b""
        with contextlib.suppress(OSError):
            self.stream.close()
        self.drained.set()

    def _hand(self, line: bytes) -> None:
        try:
            self.on_line(line)
        except Exception:  # a broken sink must not stop the pump (and every other run)
            logger.exception("an output line of descriptor %s could not be handled", self.fd)


class OutputPump:
    """Reads registered pipes until end of file, on one daemon thread started on first
    use; `watch` returns the event set once a pipe is drained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipes: dict[int, _Pipe] = {}
        self._epoll: select.epoll | None = None

    def watch(
        self, stream: IO[bytes], on_line: ChunkCallback, max_line_bytes: int
    ) -> threading.Event:
        """Read `stream` from now on, handing each line (bytes, its newline kept) to
        `on_line` on the pump's thread; the stream is closed at end of file."""
        pipe = _Pipe(stream, on_line, max_line_bytes)
        with self._lock:
            epoll = self._started()
            self._pipes[pipe.fd] = pipe
            # epoll_ctl takes effect at once, even for a wait in progress.
            epoll.register(pipe.fd, select.EPOLLIN)
        return pipe.drained

    def _started(self) -> select.epoll:
        if self._epoll is None:
            self._epoll = select.epoll()
            threading.Thread(
                target=self._loop, args=(self._epoll,), name="output", daemon=True
            ).start()
        return self._epoll

    def _loop(self, epoll: select.epoll) -> None:
        while True:
            try:
                ready = epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                self._read(epoll, fd)

    def _read(self, epoll: select.epoll, fd: int) -> None:
        pipe = self._pipes.get(fd)
        if pipe is None:
            return
        try:
            data = os.read(fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:  # the pipe was closed under us: as at end of file
            data = b""
        if data:
            pipe.take(data)
            return
        with self._lock:
            epoll.unregister(fd)
            del self._pipes[fd]
        pipe.finish()


#: the runner's one pump (its thread starts with the first app)
output_pump = OutputPump()
