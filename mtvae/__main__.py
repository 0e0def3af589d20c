"""Command line: ``python -m mtvae regenerate|grid|status|bench ...``.

``grid NAME`` runs a named experiment grid (resumable: finished runs are skipped);
``status`` says where every grid stands and what is left; ``bench moo|grid`` prints speed
benchmarks.

Bad arguments end with a one-line error (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from mtvae.device import DEVICES
from mtvae.errors import MTVAEError
from mtvae.profiles import available as profiles

if TYPE_CHECKING:
    import pandas as pd


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
    regen.add_argument("--max-minutes", type=float, default=None, metavar="M",
                       help="start no new run or chapter after M minutes; a second call "
                       "continues")
    _grid_parser(sub)
    status = sub.add_parser("status", help="where every grid stands and what is left",
                            description="Per named grid: runs planned, recorded, failed, "
                            "pending and running, the share stopped by patience, the compute "
                            "recorded and an estimate of what the pending runs need.")
    status.add_argument("--profile", default="smoke", choices=profiles())
    status.add_argument("--results", default=None, help="results root (default ./results)")
    status.add_argument("--grids", nargs="+", metavar="NAME", help="only these grids")
    status.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    bench = sub.add_parser("bench", help="speed benchmarks, results as JSON")
    bench.add_argument("target", choices=["moo", "grid"], help="what to benchmark")
    bench.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    bench.add_argument("--quick", action="store_true", help="fewer steps or runs")
    bench.add_argument("--device", default="all", choices=("all", *DEVICES),
                       help="moo: devices to time; grid: 'all' means auto")
    bench.add_argument("--methods", nargs="+", metavar="NAME", help="moo: only these methods")
    bench.add_argument("--workers", type=int, default=2, help="grid: the N of 1 vs N workers")
    bench.add_argument("--stacks", type=int, nargs="+", default=None, metavar="S",
                       help="grid: members per stacked job to compare (default 1 5 10 on the "
                       "CPU, 1 5 25 100 on a GPU)")
    return parser


def _grid_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    grid = sub.add_parser("grid", help="run a named experiment grid (resumable)",
                          description="Run the grid's runs that have no record yet under "
                          "results/NAME-PROFILE/; an interrupted grid resumes where it stopped.")
    grid.add_argument("name", metavar="NAME", help="the grid, e.g. hetero")
    grid.add_argument("--profile", default="smoke", choices=profiles())
    grid.add_argument("--workers", type=int, default=1,
                      help="processes sharing the device (local) or per Slurm job")
    grid.add_argument("--executor", default="local", choices=("local", "slurm"))
    grid.add_argument("--device", default="auto", choices=DEVICES)
    grid.add_argument("--threads", type=int, default=None,
                      help="torch threads per worker (default: 1 on CPU, cores/N on GPU)")
    grid.add_argument("--dry-run", action="store_true",
                      help="list the runs and which are done, failed or pending")
    grid.add_argument("--retry-failed", action="store_true", help="rerun the failed runs")
    grid.add_argument("--raise-cap", action="store_true",
                      help="the profile raised the grid's epoch cap: carry the records that "
                      "patience stopped under the old cap over to the new one and move the "
                      "others to superseded/ (run the grid afterwards)")
    grid.add_argument("--results", default=None, help="results root (default ./results)")
    stacking = grid.add_mutually_exclusive_group()
    stacking.add_argument("--stack", type=int, default=None, metavar="S",
                          help="runs differing only in seed train as one stacked model of S "
                          "members (default: 10 on CPU, 25 on a GPU)")
    stacking.add_argument("--no-stack", action="store_true", help="train every run on its own")
    grid.add_argument("--max-minutes", type=float, default=None, metavar="M",
                      help="start no new job after M minutes; a second call continues")
    grid.add_argument("--where", nargs="+", action="extend", default=None,
                      metavar="KEY=VALUE",
                      help="only the runs whose config has all these values (e.g. "
                           "dataset=wine seed=0; the flag may be repeated)")
    grid.add_argument("--shard", default=None, metavar="i/n",
                      help="only the i-th of n disjoint parts of the grid (several machines)")
    slurm = grid.add_argument_group("slurm (--executor slurm)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (default: the "
                       "cluster's default)")
    slurm.add_argument("--time", type=int, default=120, help="minutes per job")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs per job")
    slurm.add_argument("--cpus", type=int, default=4, help="CPUs per job")
    slurm.add_argument("--mem-gb", type=float, default=16, help="memory per job (GB)")
    slurm.add_argument("--runs-per-job", type=int, default=25, help="runs per array task")
    slurm.add_argument("--array-parallelism", type=int, default=32,
                       help="array tasks running at once")
    slurm.add_argument("--slurm-folder", default=".cache/submitit",
                       help="submitit's logs and pickles")


def _run_grid(args: argparse.Namespace) -> None:
    from mtvae.experiments import get_executor, get_grid, plan
    from mtvae.experiments.runner import parse_shard, parse_where, run_staged

    spec = get_grid(args.name, args.profile, args.results)
    if args.raise_cap:
        from mtvae.experiments.carry import raise_cap

        print(raise_cap(lambda: get_grid(args.name, args.profile, args.results), args.results))
        return
    if args.dry_run:
        table = plan(spec, args.results)
        where, shard = parse_where(args.where), parse_shard(args.shard)
        if where or shard:  # the runs a real invocation with these options would consider
            from mtvae.experiments.runner import default_stack, make_jobs, select

            stack = 1 if args.no_stack else args.stack or default_stack(args.device)
            jobs = make_jobs(select(spec.runs(), where), stack)
            if shard:
                jobs = [j for k, j in enumerate(jobs) if k % shard[1] == shard[0] - 1]
            table = table[table.id.isin({r.id for j in jobs for r in j})]
        _print_plan(table)
        counts = table.status.value_counts()
        print(f"grid {spec.name}: {len(table)} runs: " + ", ".join(
            f"{int(counts.get(s, 0))} {s}" for s in ("done", "failed", "pending")))
        return
    if args.executor == "local":
        executor = get_executor("local", workers=args.workers, threads=args.threads)
    else:
        executor = get_executor(
            "slurm", folder=args.slurm_folder, partition=args.partition, timeout_min=args.time,
            gpus_per_node=args.gpus, cpus_per_task=args.cpus, mem_gb=args.mem_gb,
            runs_per_job=args.runs_per_job, workers_per_job=args.workers,
            array_parallelism=args.array_parallelism, threads=args.threads)
    progress = "auto" if sys.stderr.isatty() else "log"  # no bar flood in a log file
    from mtvae.experiments.grids import STAGED

    staged = args.name in STAGED
    summary = run_staged(lambda: get_grid(args.name, args.profile, args.results) if staged
                         else spec, once=not staged, executor=executor, device=args.device,
                         root=args.results,
                         retry_failed=args.retry_failed, progress=progress,
                         stack=1 if args.no_stack else args.stack,
                         max_minutes=args.max_minutes, shard=parse_shard(args.shard),
                         where=parse_where(args.where))
    print(summary)


def _print_plan(table: pd.DataFrame) -> None:
    """The dry run's table; a run another process is executing ends with its holder."""
    from mtvae.experiments.claims import CLEAR_HINT

    text = table.drop(columns="claimed_by").to_string(index=False)
    held = table[table.claimed_by != ""]
    if len(held):
        lines = text.splitlines()
        text = "\n".join([lines[0]] + [f"{line}  (being run by {by})" if by else line
                                       for line, by in zip(lines[1:], table.claimed_by,
                                                           strict=True)])
    print(text)
    if len(held):  # before the summary line, which scripts read as the last line
        print(f"{len(held)} of these runs are being run by another process (e.g. "
              f"{held.claimed_by.iloc[0]}); {CLEAR_HINT}")


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
                                  seed=args.seed, timeout=args.timeout,
                                  max_minutes=args.max_minutes)
            total = sum(c["wall_seconds"] for c in manifest["chapters"].values())
            print(f"[mtvae] manifest: {args.output_dir}/manifest.json "
                  f"(chapters' wall time {total:.1f} s)")
        elif args.command == "grid":
            _run_grid(args)
        elif args.command == "status":
            from mtvae.experiments.status import render, status_table

            table = status_table(args.profile, args.results, args.grids)
            if args.json:
                print(table.to_json(orient="records", indent=1))
            else:
                print(render(table))
        elif args.command == "bench" and args.target == "grid":
            from mtvae.bench import bench_grid

            device = "auto" if args.device == "all" else args.device
            _print_rows(bench_grid(workers=args.workers, device=device, quick=args.quick,
                                   stacks=tuple(args.stacks) if args.stacks else None),
                        args.json)
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
    except BrokenPipeError:  # the reader of stdout went away (`... | head`): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
