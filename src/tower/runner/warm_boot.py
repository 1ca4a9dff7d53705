"""The bootstrap of a pre-started ("warm") app interpreter; see `tower.runner.warm`.

The runner passes this file's text with `python -c` (its own source is not visible
inside the sandbox), with two file descriptors and the modules to import:

    python -c <this file> CONTROL_FD READY_FD [MODULE ...]

It imports the modules, writes one line to READY_FD: the top-level names it loaded,
separated by spaces (so the runner can tell whether an app would shadow one), then
reads the run from CONTROL_FD until end of file: a `marshal`led dict `{"env", "cwd",
"argv"}`. An empty message means "not needed": it exits quietly. Otherwise it becomes the
run — environment, working directory, `sys.argv`, `sys.path` and a fresh `__main__`
exactly as `python SCRIPT` would have them — and executes the script. Uncaught
exceptions are reported without the bootstrap's own frames and end the process as
they end a cold interpreter.

Everything is done inside functions with local imports: `__main__`'s namespace is
cleared before the script runs, so nothing of the bootstrap is left in it. It imports
only what every interpreter has loaded at start-up (`marshal`, `_signal`, the frozen
import machinery), so the app finds the same modules loaded as in a cold start: no
`json` (which loads `re`, `enum`, ...), no `signal`, no `importlib`.
"""


def _tower_preload(modules: list, ready: int) -> None:
    """Import `modules` (those that load), then write the top-level names that loaded
    on `ready`, one line, and close it. Also a forked run's, ahead of its run (`fork_boot`)."""
    import sys

    # Everything loaded from here on is loaded ahead of the run (the bootstrap's own
    # imports too): the runner checks that the app's package shadows none of it.
    already = set(sys.modules)
    import os

    for name in modules:
        try:  # noqa: SIM105 - contextlib is not loaded yet: a cold start might not load it
            __import__(name)
        except Exception:  # a module that cannot load is simply not pre-imported
            pass
    loaded = sorted({name.partition(".")[0] for name in set(sys.modules) - already})
    os.write(ready, " ".join(name for name in loaded if name.isidentifier()).encode() + b"\n")
    os.close(ready)


def _tower_warm() -> None:
    import marshal
    import os
    import sys

    control, ready = int(sys.argv[1]), int(sys.argv[2])
    _tower_preload(sys.argv[3:], ready)
    with os.fdopen(control, "rb") as pipe:
        raw = pipe.read()
    if not raw:
        os._exit(0)
    _tower_become(marshal.loads(raw))


def _tower_become(run: dict) -> None:
    """Become the run described by `run` and execute its script (see the module doc)."""
    import builtins
    import os
    import sys

    # importlib's own classes, without importing the `importlib` package (`warnings`)
    machinery = sys.modules["_frozen_importlib_external"]
    script = run["argv"][0]

    os.environ.clear()
    os.environ.update(run["env"])
    os.chdir(run["cwd"])
    sys.argv[:] = run["argv"]
    sys.orig_argv[:] = [sys.orig_argv[0], *run["argv"]]
    # `-c` put "" first; `python SCRIPT` puts the script's directory, then PYTHONPATH.
    extra = [entry for entry in run["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[0:1] = [os.path.dirname(os.path.realpath(script)), *extra]
    sys.path_importer_cache.pop("", None)
    for finder in sys.meta_path:  # what importlib.invalidate_caches() does
        if hasattr(finder, "invalidate_caches"):
            finder.invalidate_caches()

    namespace = sys.modules["__main__"].__dict__
    namespace.clear()
    namespace.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __loader__=machinery.SourceFileLoader("__main__", script),
        __spec__=None,
        __annotations__={},
        __builtins__=builtins,
        __file__=script,
        __cached__=None,
    )
    del run, extra, machinery
    try:
        with open(script, "rb") as source:
            code = compile(source.read(), script, "exec", dont_inherit=True)
        exec(code, namespace)
    except SystemExit:
        raise  # ends the process exactly as it would end a cold one
    except BaseException as exc:  # reported as the interpreter reports it
        trace = exc.__traceback__
        # Skip this function's frame: the traceback starts in the script, as it would.
        trace = trace.tb_next if trace is not None else None
        sys.excepthook(type(exc), exc.with_traceback(trace), trace)
        if not isinstance(exc, KeyboardInterrupt):
            sys.exit(1)
        # An uncaught Ctrl-C ends a cold interpreter by SIGINT (exit status 130) once it
        # has shut down: its threads joined, `atexit` run. Reported already, it goes on
        # to whoever ends the process that way: the interpreter itself (a warm start:
        # `-c` code that lets a KeyboardInterrupt out ends so) or `_tower_end` (a fork).
        sys.excepthook = lambda *args: None
        raise


if __name__ == "__main__":
    if "_tower_template" in globals():  # a fork template's text (`fork_boot`) comes first
        _tower_end(_tower_template(), _tower_become)  # noqa: F821 - defined by that text
    else:
        _tower_warm()
