"""Command line: ``python -m mtvae regenerate ...`` and ``python -m mtvae bench moo ...``.

Bad arguments end with a one-line error (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from mtvae.device import DEVICES
from mtvae.errors import MTVAEError
from mtvae.profiles import available as profiles


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    regen = sub.add_parser("regenerate", help="execute the chapters with papermill")
    regen.add_argument("--profile", default="smoke", choices=profiles())
    regen.add_argument("--device", default="auto", choices=DEVICES)
    regen.add_argument("--only", nargs="+", metavar="NN", help="chapter numbers, e.g. 01 03")
    regen.add_argument("--output-dir", default="book/chapters")
    regen.add_argument("--notebooks", default="notebooks", help="folder of NN_name.md sources")
    regen.add_argument("--seed", type=int, default=0)
    regen.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    bench = sub.add_parser("bench", help="speed benchmarks, results as JSON")
    bench.add_argument("target", choices=["moo"], help="what to benchmark")
    bench.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    bench.add_argument("--quick", action="store_true", help="fewer steps (under a minute)")
    bench.add_argument("--device", default="all", choices=("all", *DEVICES))
    bench.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods")
    return parser


def _print_rows(rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "regenerate":
            from mtvae.regenerate import regenerate

            manifest = regenerate(profile=args.profile, device=args.device, only=args.only,
                                  output_dir=args.output_dir, notebooks=args.notebooks,
                                  seed=args.seed, timeout=args.timeout)
            total = sum(c["wall_seconds"] for c in manifest["chapters"].values())
            print(f"[mtvae] manifest: {args.output_dir}/manifest.json "
                  f"(chapters' wall time {total:.1f} s)")
        elif args.command == "bench":
            from mtvae.bench import bench_moo

            _print_rows(bench_moo(quick=args.quick, device=args.device, methods=args.methods),
                        args.json)
    except MTVAEError as err:
        print(f"mtvae: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtvae: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
