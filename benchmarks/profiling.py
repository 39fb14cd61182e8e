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


def start(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("    py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(  # noqa: S603 - our own arguments
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--output",
            str(output),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
        ],
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
