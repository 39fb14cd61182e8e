"""py-spy, attached to a running process for a while (``python -m benchmarks --profile DIR``).

It samples every thread from outside, so work handed to ``asyncio.to_thread`` is seen as well,
and it costs the sampled process almost nothing (``--nonblocking``). The output is collapsed
stacks (``--format raw``); ``python -m benchmarks.profile_summary`` ranks the functions.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def _py_spy() -> str | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("    py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    return py_spy


def wrap(args: list[str], output: Path) -> list[str]:
    """``args`` run under py-spy from their start (a short-lived process, such as ``once``,
    which attaching to would miss the beginning of); ``args`` as they are without py-spy."""
    py_spy = _py_spy()
    if py_spy is None:
        return args
    return [*_record(py_spy, output), "--", *args]


def _record(py_spy: str, output: Path) -> list[str]:
    """``py-spy record`` into ``output``: collapsed stacks, 200 Hz, never pausing the target."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return [
        py_spy,
        "record",
        "--output",
        str(output),
        "--format",
        "raw",
        "--rate",
        "200",
        "--nonblocking",
    ]


def start(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    py_spy = _py_spy()
    if py_spy is None:
        return None
    proc = subprocess.Popen(  # noqa: S603 - our own arguments
        [*_record(py_spy, output), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the measured work starts
    return proc


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
