"""README command 1: seed the demo data and materialize every asset on the local default.

    python -m analytics_platform.demo            # seed + materialize everything
    python -m analytics_platform.demo --seed-only
    python -m analytics_platform.demo --stop     # stop the embedded PostgreSQL (make stop)
"""

from __future__ import annotations

import argparse
import sys

from analytics_platform.demo.runner import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics_platform.demo")
    parser.add_argument("--seed-only", action="store_true", help="write the demo data only")
    parser.add_argument("--domain", action="append", help="limit to these domains")
    parser.add_argument("--verbose", action="store_true", help="show Dagster's debug log of every run")
    parser.add_argument("--stop", action="store_true", help="stop the embedded PostgreSQL and exit")
    args = parser.parse_args(argv)
    if args.stop:
        from analytics_platform.resources.app_db import stop_embedded_postgres
        from analytics_platform.settings import get_settings

        directory = get_settings().data_dir / "postgres"
        stopped = stop_embedded_postgres(directory)
        print(f"embedded PostgreSQL {'stopped' if stopped else 'was not running'} ({directory.resolve()})")
        return 0
    return run_demo(seed_only=args.seed_only, domains=args.domain, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
