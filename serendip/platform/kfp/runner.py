"""KFP adapter: compile, run locally with ``kfp.local``, or submit to a KFP endpoint.

The same pipeline function serves both: locally the SubprocessRunner executes each component
in this interpreter's environment (no containers); on Kubernetes each component runs in the
project image. Everything a local run makes lives under its work directory.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import io
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from serendip.errors import SerendipError


def _pipeline(name: str):
    from serendip.platform.kfp import pipelines

    return pipelines.load(name)


def _params(func) -> set[str]:
    """Parameter names of a @dsl.pipeline (a GraphComponent wrapping the Python function)."""
    return set(inspect.signature(getattr(func, "pipeline_func", func)).parameters)


def _check_params(name: str, func, params: dict[str, Any]) -> None:
    known = _params(func)
    unknown = set(params) - known
    if unknown:
        raise SerendipError(f"unknown parameter(s) {sorted(unknown)} for pipeline {name!r}",
                            field="--set", fix=f"use one of {sorted(known)}")


def compile_all(out_dir: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    from kfp import compiler

    from serendip.platform.kfp import pipelines

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(pipelines.PIPELINES):
        path = out / f"{name}.yaml"
        tmp = path.with_name(f".{name}.tmp.yaml")
        compiler.Compiler().compile(_pipeline(name), str(tmp))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def local_defaults(workdir: Path, data_uri: str | None) -> dict[str, Any]:
    workdir = workdir.resolve()
    return {"data_uri": str(Path(data_uri).resolve()) if data_uri else str(workdir),
            "mlflow_uri": os.environ.get("MLFLOW_TRACKING_URI",
                                         f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}")}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


class _TaskLog(io.TextIOBase):
    """A stream for everything kfp.local prints (executor JSON, warnings, every component's
    own log): all of it goes to the log file, one line per finished task to ``echo``."""

    def __init__(self, log: TextIO, echo: TextIO):
        self.log, self.echo, self._buf = log, echo, ""
        self._started: dict[str, list[float]] = {}
        self._detached = False

    def writable(self) -> bool:
        return True

    def detach(self) -> None:  # type: ignore[override]
        """The log file is about to close: anything still holding this stream writes to the
        terminal from now on instead of raising ``I/O operation on closed file``."""
        self._detached = True

    def write(self, s: str) -> int:
        if self._detached:
            return self.echo.write(s)
        self.log.write(s)
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            plain = _ANSI.sub("", line)
            if m := _TASK_START.search(plain):
                self._started.setdefault(m[1], []).append(time.perf_counter())
            elif m := _TASK_END.search(plain):
                starts = self._started.get(m[1]) or [time.perf_counter()]
                took = time.perf_counter() - starts.pop(0)
                self.echo.write(f"  {m[1]:<22} {m[2].lower():<8} {took:7.1f} s\n")
                self.echo.flush()
        return len(s)

    def flush(self) -> None:
        (self.echo if self._detached else self.log).flush()


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                    if isinstance(lg, logging.Logger)]


@contextlib.contextmanager
def _logging_restored(stream: io.TextIOBase, err: TextIO):
    """Undo what a run does to ``logging`` while stdout/stderr are redirected to ``stream``.

    kfp.local swaps the *root* logger's handlers per task (``local_logger_context``); with
    ParallelFor tasks in threads the swaps interleave and a handler bound to the redirected
    stream can stay installed for good, so every later log record hit the closed pipeline log
    (``--- Logging error --- ValueError: I/O operation on closed file``, issue 12 case 13).
    Afterwards: the root logger gets back its handlers and level; a handler bound to ``stream``
    is removed from a logger that existed before, and re-pointed at the real stderr on a
    logger created during the run (a library imported then keeps its logging)."""
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    before = {id(lg): list(lg.handlers) for lg in _loggers()}
    try:
        yield
    finally:
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        for lg in _loggers()[1:]:
            for h in list(lg.handlers):
                if not isinstance(h, logging.StreamHandler) or h.stream is not stream:
                    continue
                if id(lg) in before:
                    lg.removeHandler(h)
                else:
                    h.setStream(err)


@contextlib.contextmanager
def _captured(log_path: Path | None):
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo, err = sys.stdout, sys.stderr
    with open(log_path, "w", encoding="utf-8") as log:
        stream = _TaskLog(log, echo)
        try:
            with _logging_restored(stream, err), contextlib.redirect_stdout(stream), \
                    contextlib.redirect_stderr(stream):
                yield
        finally:
            stream.detach()


def log_path_for(workdir: str | os.PathLike, name: str) -> Path:
    """Where a local run of pipeline ``name`` keeps its full output (CLI and demo alike)."""
    return Path(workdir) / "logs" / f"pipeline-{name}.log"


def _failure_summary(log: Path, lines: int = 15) -> tuple[str, str | None]:
    """(the log's last lines, the last project error a component raised) from one read."""
    text = _ANSI.sub("", log.read_text(encoding="utf-8", errors="replace"))
    hits = re.findall(r"serendip\.errors\.\w+: (.*)", text)
    return "\n".join(text.rstrip().splitlines()[-lines:]), (hits[-1].strip() if hits else None)


def run_local(name: str, workdir: str | os.PathLike, data_uri: str | None,
              params: dict[str, Any], log_path: str | os.PathLike | None = None
              ) -> dict[str, Any]:
    """Run pipeline ``name`` with kfp.local; returns its outputs (artifact paths, values).

    With ``log_path`` everything the runner and the components print goes to that file and
    the terminal shows one line per finished task (the tail of the log when one fails)."""
    from kfp import local

    func = _pipeline(name)
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path is not None else None
    args = {k: v for k, v in local_defaults(wd, data_uri).items() if k in _params(func)}
    args.update(params)
    _check_params(name, func, args)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str((wd / "kfp").resolve()), raise_on_error=True)
    print_ = builtins.print
    try:
        with _captured(log):
            try:
                task = func(**args)
            finally:
                # kfp.local indents print() by swapping builtins.print per task; ParallelFor
                # tasks run in threads, and interleaved swaps can leave the indented one
                # installed for good.
                builtins.print = print_
    except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE ..."
        first = _ANSI.sub("", str(e).splitlines()[0])
        if log is not None:
            tail, cause = _failure_summary(log)
            print(f"--- last lines of {log} ---\n{tail}\n---", file=sys.stderr)
            first += f" Its error: {cause}" if cause else ""
        where = f"read {log}" if log is not None else "read the failing task's log above"
        raise SerendipError(f"pipeline {name!r} failed: {first}", field=name,
                            fix=f"{where}; its outputs are under {wd / 'kfp'}") from None
    outputs = {}
    for key, value in (getattr(task, "outputs", None) or {}).items():
        outputs[key] = getattr(value, "path", value)
    return outputs


def submit(name: str, host: str, experiment: str, data_uri: str | None,
           params: dict[str, Any]) -> str:
    """Submit to a KFP API server; production parameters (data, MLflow) come from ``params``."""
    import kfp

    func = _pipeline(name)
    args = dict(params)
    if data_uri:
        args["data_uri"] = data_uri
    _check_params(name, func, args)
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(func, arguments=args, experiment_name=experiment,
                                               enable_caching=True)
    return run.run_id
