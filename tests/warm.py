"""Run a command line the way ``python -m <module> <args>`` does, in a process forked from one
that has already imported torch, Lightning, MLflow and Hydra.

A new Python process spends 10-13 s of CPU importing those on a 2-core machine before the
command does anything, and the suite runs dozens of commands that are done within seconds (the
bad-input cases, predict, register, sweeps on the tiny data, the interrupt tests). Here each
command still gets a process of its own (its own pid, exit code, output, environment, working
folder, $PYTHONPATH and signal handlers, nothing shared with the next), forked from
multiprocessing's fork server, whose only work was the imports. Tests of what a new interpreter
itself does keep starting one: lazy imports (``--cfg job``), a full run's fast exit and the
warnings it prints, DDP's second rank, the jobs of submitit and joblib, the notebook's kernel,
the servers.

The fork server has only imported modules, run no torch operation and started no thread pool
when it forks: the state in which torch's own DataLoader forks its workers. The pytest process,
which has run torch's thread pools, is never forked. ``test_cli.py`` checks that a forked
command answers exactly as a new interpreter does.

Where it differs from a new interpreter, and why that is acceptable here:
- What is read when an interpreter starts or a module is imported comes from the fork server,
  not from ``env``: PYTHONHASHSEED (every command has the same), PYTHONWARNINGS, OpenMP thread
  counts, MLflow's logging set-up, and warnings printed while importing (test_progress.py checks
  those with a new interpreter). digitlab's own variables are read when used, so ``env`` holds.
- The output is complete when the command's process exits, not when every process it started
  has closed the pipes: a worker left running would hang ``subprocess.run`` but not this.
- stdin is empty (/dev/null).
"""

from __future__ import annotations

import atexit
import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

# What a digitlab command imports before it does its work.
# (Not this module: each child imports it, from the path the child is given.)
PRELOAD = [
    "digitlab.cli.train",
    "digitlab.jobs.preflight",
    "digitlab.cli.predict",
    "digitlab.jobs.predict",
    "digitlab.training.run",
    "digitlab.tracking.store",
    "mlflow.store.tracking.sqlalchemy_store",
]

_context = None
# Reading a child's exit status consumes it, and Process.start() reads those of every finished
# child: threads starting and waiting for commands at once take turns here, or one of them reads
# nothing and multiprocessing reports exit status 255.
_status_lock = threading.Lock()


def _fork_server() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives a real interpreter."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _command(
    module: str,
    args: list[str],
    env: dict[str, str],
    cwd: str,
    out: str,
    err: str,
    new_session: bool,
) -> None:
    """In the forked process: become ``python -m module args`` run in ``cwd`` with ``env``."""
    if new_session:  # as Popen(start_new_session=True): a process group to signal as a whole
        os.setsid()
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    # As `python -m`: the working folder first on the path, then $PYTHONPATH.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [cwd, *extra]
    sys.argv = [module, *args]
    # `python -m` runs the module (a package's __main__) as __main__ without importing it under
    # its own name first (runpy warns where it was): only its imports are warm.
    spec = importlib.util.find_spec(module)
    sys.modules.pop(f"{module}.__main__" if spec.submodule_search_locations else module, None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    # A forked child must end in os._exit, and Python has no public call for its exit steps:
    # threading and atexit offer only these private ones (multiprocessing's children skip them).
    try:  # what the interpreter's exit runs, in its order (Py_FinalizeEx):
        threading._shutdown()  # join non-daemon threads, after their hooks (loky stops its workers)
        atexit._run_exitfuncs()  # then the atexit handlers (MLflow ends its runs)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Started:
    """A command forked warm and running: the parts of ``subprocess.Popen`` the tests use, with
    its output captured as by ``stdout=PIPE, stderr=PIPE, text=True``."""

    def __init__(
        self,
        module: str,
        args: tuple[str, ...],
        env: dict[str, str] | None,
        cwd: Path | str | None,
        new_session: bool,
    ) -> None:
        self.args = [sys.executable, "-m", module, *args]
        self._folder = Path(tempfile.mkdtemp(prefix="warm-"))
        env = dict(os.environ if env is None else env)
        self._process = _fork_server().Process(
            target=_command,
            args=(
                module,
                list(args),
                env,
                str(cwd or os.getcwd()),
                str(self._folder / "out"),
                str(self._folder / "err"),
                new_session,
            ),
        )
        with _status_lock:
            self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        """As Popen's: the exit status, minus the signal's number if a signal ended it."""
        return self.poll()

    def poll(self) -> int | None:
        with _status_lock:
            return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        multiprocessing.connection.wait([self._process.sentinel], timeout)
        code = self.poll()
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        try:  # (a command killed at once may not have opened its files)
            return tuple(
                path.read_text() if path.exists() else ""
                for path in (self._folder / "out", self._folder / "err")
            )
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


def start(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    new_session: bool = False,
) -> Started:
    """``subprocess.Popen([python, "-m", module, *args], stdout=PIPE, stderr=PIPE, text=True,
    ...)``, forked from the warm fork server. ``env`` is the whole environment (default: this
    one's)."""
    return Started(module, args, env, cwd, new_session)


def run(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``subprocess.run([python, "-m", module, *args], capture_output=True, text=True, ...)``,
    forked from the warm fork server. ``env`` is the whole environment (default: this one's)."""
    process = start(module, *args, env=env, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout)
    except BaseException:  # a timeout, pytest-timeout's or Ctrl-C: never leave it running
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
