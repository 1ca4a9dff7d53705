"""The runner's output pump: one thread cuts every app's output into lines exactly as
`readline(max_line_bytes)` would, and says when each pipe is drained."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tower.runner.output_pump import OutputPump


class Collected:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, line: bytes) -> None:
        with self.lock:
            self.lines.append(line)


@contextmanager
def pipe() -> Iterator[tuple[io.BufferedReader, int]]:
    """A pipe's read end as a stream and its write end, which the test closes."""
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb")
    try:
        yield reader, write_end
    finally:
        reader.close()  # a no-op once the pump closed it


def readline_cuts(data: bytes, limit: int) -> list[bytes]:
    """What `readline(limit)` returns, call after call, for `data`."""
    stream, cuts = io.BytesIO(data), []
    while line := stream.readline(limit):
        cuts.append(line)
    return cuts


@pytest.mark.parametrize(
    "data",
    [
        b"one\ntwo\r\nthree",
        b"x" * 10 + b"\n",  # exactly the limit, then its newline alone
        b"y" * 25 + b"\nshort\n" + b"z" * 9,
        b"\n\n\n",
        b"",
    ],
)
def test_lines_are_cut_as_readline_cuts_them(data: bytes) -> None:
    pump, got = OutputPump(), Collected()
    with pipe() as (reader, write_end):
        drained = pump.watch(reader, got, max_line_bytes=10)
        # Byte by byte: where a read happens to end must not change the lines.
        for byte in data:
            os.write(write_end, bytes([byte]))
        os.close(write_end)
        assert drained.wait(5)
    assert got.lines == readline_cuts(data, 10)
    assert reader.closed


def test_one_pump_serves_many_pipes_at_once() -> None:
    pump, sinks, ends, events = OutputPump(), [], [], []
    for _ in range(20):
        read_end, write_end = os.pipe()
        sink = Collected()
        events.append(pump.watch(os.fdopen(read_end, "rb"), sink, max_line_bytes=1024))
        sinks.append(sink)
        ends.append(write_end)
    for round_number in range(3):
        for index, write_end in enumerate(ends):
            os.write(write_end, f"pipe {index} line {round_number}\n".encode())
    for write_end in ends:
        os.close(write_end)
    assert all(event.wait(5) for event in events)
    for index, sink in enumerate(sinks):
        assert sink.lines == [f"pipe {index} line {n}\n".encode() for n in range(3)]


def test_a_line_is_handed_over_when_it_ends_not_at_end_of_file() -> None:
    pump, got = OutputPump(), Collected()
    with pipe() as (reader, write_end):
        drained = pump.watch(reader, got, max_line_bytes=1024)
        os.write(write_end, b"first\npartial")
        deadline = time.monotonic() + 5
        while not got.lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got.lines == [b"first\n"]
        assert not drained.is_set()
        os.close(write_end)
        assert drained.wait(5)
    assert got.lines == [b"first\n", b"partial"]


def test_a_failing_sink_loses_its_own_lines_only() -> None:
    pump, good = OutputPump(), Collected()

    def broken(line: bytes) -> None:
        raise RuntimeError("the sink is broken")

    with pipe() as (bad_reader, bad_end), pipe() as (good_reader, good_end):
        bad_drained = pump.watch(bad_reader, broken, max_line_bytes=1024)
        good_drained = pump.watch(good_reader, good, max_line_bytes=1024)
        os.write(bad_end, b"lost\n")
        os.write(good_end, b"kept\n")
        os.close(bad_end)
        os.close(good_end)
        assert bad_drained.wait(5) and good_drained.wait(5)
    assert good.lines == [b"kept\n"]
