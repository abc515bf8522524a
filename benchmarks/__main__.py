"""Run a named benchmark at a given scale and print the result table.

    python -m benchmarks list
    python -m benchmarks run mixpanel_ingest --scale 1000000 --scale 5000000
    python -m benchmarks run temp_users            # the benchmark's default scales

Results are also written as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import format_table, to_json

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    run = sub.add_parser("run")
    run.add_argument("name", choices=available())
    run.add_argument("--scale", type=int, action="append", help="repeatable; default: the benchmark's")
    run.add_argument("--baseline-scale", type=int, help="run the (slow) baseline at this scale instead")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(available()))
        return 0
    module = importlib.import_module(f"benchmarks.bench_{args.name}")
    results = []
    for scale in args.scale or module.DEFAULT_SCALES:
        with tempfile.TemporaryDirectory(prefix=f"bench_{args.name}_") as tmp:
            kwargs = {"baseline_scale": args.baseline_scale} if args.baseline_scale else {}
            results.extend(module.run(scale, Path(tmp), **kwargs))
    print(format_table(results))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(to_json(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
