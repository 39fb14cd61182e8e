"""Summarise py-spy collapsed stacks (``python -m benchmarks --profile DIR``).

``python -m benchmarks.profile_summary DIR/large-sqlite-poll2-unchanged.txt [--top 25]``
prints the functions with the most samples, inclusive (the function and what it calls) and
self (the function's own lines), as shares of every sample of the poll, all threads together.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("/monitor/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/monitor/":
                path = "monitor/" + path
            break
    return f"{match.group('name')} ({path})"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
        own[_function(frames[-1])] += count
    return total, inclusive, own


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose text contains this")
    args = parser.parse_args(argv)
    for path in args.files:
        total, inclusive, own = summarise(path)
        print(f"{path.name}: {total} samples")
        for title, counter in (("inclusive", inclusive), ("self", own)):
            print(f"  top {args.top} {title}:")
            shown = [(n, c) for n, c in counter.most_common() if args.match in n][: args.top]
            for name, count in shown:
                print(f"    {100 * count / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):  # | head
        main()
