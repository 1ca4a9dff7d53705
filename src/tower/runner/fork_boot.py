"""The bootstrap of a fork template: an interpreter that forks runs instead of
starting one per run; see `tower.runner.forks`.

The runner passes this file's text followed by `warm_boot`'s with `python -c` (its
own source is not visible inside the sandbox):

    python -c <this file + warm_boot> template SOCKET_FD

The template runs inside bubblewrap as root, with only the capabilities it needs to
set a run up (CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_SYS_ADMIN), in the runner's
PID namespace, with the venv's site-packages hidden under an empty tmpfs: it started
without a single line of the venv's packages (their `.pth` files) running with its
privileges. It says `ready` on SOCKET_FD (a SOCK_SEQPACKET socket), then serves one
request per message until end of file: a `marshal`led dict of what sets the run up
(its uid, its directories, the modules to import ahead of it) and four or five
descriptors (the run's stdout, stderr, gate and status pipes, and where it says it
has imported those modules). It forks a child into a new PID namespace, answers with
its pid (as text), and goes on. The child ("C", PID 1 of that namespace) sets the run
up:

- its own session; SIGTERM/SIGINT/SIGHUP/SIGQUIT ignored (it must outlive the app to
  report its status); SIGKILL when the template goes;
- its own mount, IPC and UTS namespaces: the runner's work root, /tmp and
  /dev/shm covered by empty tmpfs, with the run's own directories (and the venv,
  Python install and catalog directories when they live there) bound back; the
  venv's site-packages shown;
- it writes `R` on the status pipe and waits at the gate for `G` (the runner moves
  it into the run's cgroup and sets its limits as soon as it has its pid, and opens
  the gate only once that is done). At end of file instead it exits, nothing started
  (exit status 125); a failure before that is written as `E<message>`;
- it mounts its namespace's /proc and forks the app ("A", PID 2), reaps what the
  app leaves behind, and ends with it (the kernel then kills the rest of the
  namespace). The app drops
  to the run's uid and gid (no groups, no capabilities, no new privileges; a run
  without a uid of its own stays root with no capability at all, as under bwrap's
  `--cap-drop ALL`), forgets the modules the template loaded beyond a plain
  interpreter's, processes the venv's site-packages as `site` would have at
  start-up, imports the modules asked for (only with a fifth descriptor, where it
  then says which it loaded, as a warm interpreter does: `warm_boot._tower_preload`),
  then reads the rest of the run from the gate: a `marshal`led dict with its
  environment (secrets included), working directory and argv. Those never pass
  through the template, whose memory every later fork inherits, nor through C. At
  end of file with nothing read it exits (125). It returns the run to the caller
  (`warm_boot._tower_become`), which executes the script. A run forked ahead of its
  run (`tower.runner.warm`) gets `G` at once and waits here, privileges dropped and
  its modules imported;
- the app ends as a cold interpreter ends (`_tower_end`), except that it does not
  tear down what the template had before the fork: its non-daemon threads are
  joined, `atexit` callbacks run, its `__main__` and the modules it imported are
  released (their files flushed and closed, finalizers run), the standard streams
  flushed; then it exits. (Tearing the template's own objects down would copy most
  of its memory for nothing: the process ends right after.)
- it writes the app's exit status (`128 + N` for signal N) on the status pipe and
  exits with it.
"""


def _tower_end(run: dict, become: "Callable[[dict], None]") -> None:  # noqa: F821
    """Run the app (`become`), then end the process as the interpreter would; see the
    module doc. Only local names: `become` replaces `__main__`'s namespace."""
    import os
    import sys

    forked_modules = set(run.pop("kept"))  # what a cold interpreter has at start-up
    code = 0
    interrupted = False
    try:
        become(run)
    except KeyboardInterrupt:  # reported already; the process ends by SIGINT below
        interrupted = True
    except SystemExit as exc:  # as the interpreter reads it
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # joins the non-daemon threads, as Py_Finalize does
    # Only now: a cold interpreter has no `atexit` in sys.modules when the script starts.
    import atexit

    atexit._run_exitfuncs()
    alone = threading is None or threading.active_count() <= 1
    own = [name for name in sys.modules if name not in forked_modules]
    if alone:  # with daemon threads still running, their modules stay as they are
        sys.modules["__main__"].__dict__.clear()
        for name in reversed(own):
            module = sys.modules.pop(name, None)
            if module is not None and hasattr(module, "__dict__"):
                module.__dict__.clear()
    import gc

    gc.collect()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # what the interpreter does when stdout cannot be flushed
        code = 120
    if interrupted:  # as a cold interpreter ends after an uncaught Ctrl-C
        import _signal

        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    os._exit(code)


#: the longest request the template reads (a run's uid and directories)
MAX_MESSAGE_BYTES = 1 << 16
#: what opens a forked run's gate (the runner has confined it), before the run itself
GATE_GO = b"G"


def _tower_template() -> dict:
    import sys

    startup_modules = set(sys.modules)
    import _signal
    import _socket
    import ctypes
    import marshal
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    new_ns, new_pid, new_ipc, new_uts, new_cgroup = (
        0x00020000,
        0x20000000,
        0x08000000,
        0x04000000,
        0x02000000,
    )
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec, ms_remount, ms_bind, ms_rec, ms_private = (
        1,
        2,
        4,
        8,
        32,
        4096,
        16384,
        1 << 18,
    )
    pr_set_pdeathsig, pr_set_dumpable, pr_capbset_drop, pr_set_no_new_privs = 1, 4, 24, 38
    pr_cap_ambient, pr_cap_ambient_clear_all, capability_version_3 = 47, 4, 0x20080522
    mnt_detach, o_path = 2, 0o10000000
    terminating = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT)

    def check(result: int, what: str) -> None:
        if result != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"{what}: {os.strerror(error)}")

    def mount(
        source: str | None, target: str, kind: str | None, flags: int, data: str | None = None
    ) -> None:
        encoded = [None if value is None else value.encode() for value in (source, kind, data)]
        result = libc.mount(encoded[0], target.encode(), encoded[1], flags, encoded[2])
        check(result, f"mount {target}")

    def die_with_parent(parent: int) -> None:
        """SIGKILL when the template goes. (C is PID 1 of its own namespace, where
        getppid() says 0: its parent's pid is read from the template's /proc.)"""
        check(libc.prctl(pr_set_pdeathsig, 9, 0, 0, 0), "prctl")
        with open("/proc/self/stat", "rb") as stat:
            if int(stat.read().rsplit(b")", 1)[1].split()[1]) != parent:
                os._exit(137)  # it went before the request took effect

    def status_of(wait_status: int) -> int:
        code = os.waitstatus_to_exitcode(wait_status)
        return 128 - code if code < 0 else code

    def set_up(run: dict) -> None:
        """C's part before the gate: its namespaces and its view of the files. An empty
        tmpfs covers /tmp, /dev/shm and the runner's work root; what the run needs
        under those (its own directories, writable; the venv and the Python install,
        read-only, when they live there) is bound back."""
        check(libc.unshare(new_ns | new_ipc | new_uts), "unshare")
        mount(None, "/", None, ms_rec | ms_private)
        covered = {"/tmp": "mode=1777", "/dev/shm": "mode=1777", run["hide"]: "mode=0755"}
        kept = [(path, 0) for path in run["dirs"]] + [(path, ms_rdonly) for path in run["read"]]
        kept = [
            (path, os.open(path, o_path | os.O_DIRECTORY), flags)
            for path, flags in kept
            if any(path == top or path.startswith(top + "/") for top in covered)
        ]
        for top, mode in covered.items():
            os.makedirs(top, exist_ok=True)
            mount("tmpfs", top, "tmpfs", ms_nosuid | ms_nodev, mode)
        for path, handle, flags in kept:
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", path, None, ms_bind | ms_rec)
            mount(None, path, None, ms_bind | ms_remount | ms_nosuid | ms_nodev | flags)
            os.close(handle)
        for path in run["site"]:
            check(libc.umount2(path.encode(), mnt_detach), f"umount {path}")

    def drop_privileges(uid: int | None) -> None:
        """A's part: become the run's user (`uid`; None: stay root, as a run that
        shares its account's catalog directories does), with no capability left."""
        check(libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0), "prctl")
        if uid is None:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as last:
                for capability in range(int(last.read()) + 1):
                    check(libc.prctl(pr_capbset_drop, capability, 0, 0, 0), "prctl")
            check(libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0), "prctl")
            header = (ctypes.c_uint32 * 2)(capability_version_3, 0)
            check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
        else:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            # What an exec would do: a process that changed uid is not dumpable (its
            # /proc files would stay root's), an exec'd one is.
            check(libc.prctl(pr_set_dumpable, 1, 0, 0, 0), "prctl")
        with open("/proc/self/status", "rb") as status:
            fields = dict(line.split(b":", 1) for line in status.read().splitlines())
        names = (b"CapPrm", b"CapEff", b"CapAmb", b"CapBnd")
        held = [name.decode() for name in names if int(fields[name], 16)]
        if uid is not None:
            held = [name for name in held if name != "CapBnd"]
            if os.getresuid() != (uid,) * 3 or os.getgroups():
                held.append("its uid or groups")
        if held:
            raise OSError(f"privileges were not dropped (still: {', '.join(held)})")

    def app(run: dict, gate: int, ready: int | None) -> dict:
        """A: the app's process, once it has dropped its privileges, imported what
        the runner asked for (with `ready`) and read its run from `gate`."""
        for signum in terminating:
            _signal.signal(signum, _signal.SIG_DFL)
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        drop_privileges(run["uid"])
        for name in set(sys.modules) - startup_modules:
            del sys.modules[name]
        import site

        for path in run["site"]:
            site.addsitedir(path)
        site.execsitecustomize()
        run["kept"] = list(sys.modules)
        if ready is not None:
            # Not from `-c`'s "" (the template's directory): the run's own comes later.
            script_dir = sys.path.pop(0)
            _tower_preload(run["preload"], ready)  # noqa: F821 - defined by warm_boot
            sys.path.insert(0, script_dir)
        private = b""
        while chunk := os.read(gate, 1 << 16):
            private += chunk
        if not private:
            os._exit(125)  # not needed: nothing of a run has started
        os.close(gate)
        run.update(marshal.loads(private))
        return run

    def child(run: dict, fds: list[int], template: int, server: int) -> dict:
        """C: PID 1 of the run's own PID namespace (it reaps, and ends with the app),
        in the run's own session and namespaces; returns only in the app."""
        stdout, stderr, gate, status = fds[:4]
        ready = fds[4] if len(fds) > 4 else None
        try:
            os.setsid()
            for signum in terminating:
                _signal.signal(signum, _signal.SIG_IGN)
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            die_with_parent(template)
            os.close(server)
            null = os.open("/dev/null", os.O_RDONLY)
            for source, target in ((null, 0), (stdout, 1), (stderr, 2)):
                os.dup2(source, target)
            for spare in (null, stdout, stderr):
                os.close(spare)
            set_up(run)
        except BaseException as exc:  # nothing of the run has started: the runner says why
            os.write(status, f"E{exc}".encode())
            os._exit(70)
        os.write(status, b"R")
        if os.read(gate, len(GATE_GO)) != GATE_GO:
            os._exit(125)  # the runner could not confine it: nothing starts
        try:
            check(libc.unshare(new_cgroup), "unshare")  # its cgroup is its root
            mount("proc", "/proc", "proc", ms_nosuid | ms_nodev | ms_noexec)
            app_pid = os.fork()
        except BaseException as exc:
            os.write(2, f"tower: the run could not be started: {exc}\n".encode())
            os.write(status, b"70")
            os._exit(70)
        if app_pid == 0:
            os.close(status)
            try:
                return app(run, gate, ready)
            except Exception as exc:  # nothing of the app has run yet
                os.write(2, f"tower: the run could not be started: {exc}\n".encode())
                os._exit(70)
        os.close(gate)
        if ready is not None:
            os.close(ready)
        while True:  # whatever the app leaves behind is reparented here
            pid, wait_status = os.waitpid(-1, 0)
            if pid == app_pid:
                break
        code = status_of(wait_status)
        os.write(status, b"%d" % code)
        os._exit(code)  # the kernel kills what is left in the namespace

    # Ahead of the forks, once: the compiler's first use costs milliseconds, and
    # objects the collector never moves again are not copied into every fork.
    compile("print('x')\n", "<warm>", "exec", dont_inherit=True)
    import gc

    gc.freeze()
    server = int(sys.argv[2])
    template = os.getpid()
    own_pids = os.open("/proc/self/ns/pid", os.O_RDONLY)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)  # its children are reaped at once
    sock = _socket.socket(fileno=server)
    sock.send(b"ready")
    fd_space = _socket.CMSG_SPACE(5 * 4)  # at most five descriptors
    while True:
        message, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE_BYTES, fd_space)
        if not message:  # the runner is done with it: it goes once its runs have
            while True:
                try:
                    os.wait()
                except ChildProcessError:
                    os._exit(0)
        fds = [
            int.from_bytes(data[start : start + 4], sys.byteorder)
            for level, kind, data in ancillary
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
            for start in range(0, len(data) - len(data) % 4, 4)
        ]
        try:
            if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
                raise ValueError("the request was too long")
            if len(fds) not in (4, 5):
                raise ValueError(f"{len(fds)} descriptors instead of 4 or 5")
            run = marshal.loads(message)
            # Its child is PID 1 of a new namespace; later children are not.
            check(libc.unshare(new_pid), "unshare")
            try:
                pid = os.fork()
            finally:
                if os.getpid() == template:
                    check(libc.setns(own_pids, new_pid), "setns")
        except (OSError, ValueError, EOFError, TypeError) as exc:
            for fd in fds:
                os.close(fd)
            sock.send(f"!{exc}".encode())
            continue
        if pid == 0:
            sock.detach()
            os.close(own_pids)
            return child(run, fds, template, server)
        for fd in fds:
            os.close(fd)
        sock.send(b"%d" % pid)
