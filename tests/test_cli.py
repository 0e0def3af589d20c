"""The command line: clean one-line errors, and regeneration end to end on tiny chapters."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def run_cli(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mtvae", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["regenerate", "--profile", "bogus"], "invalid choice: 'bogus'"),
        (["regenerate", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["regenerate", "--only", "42"], "unknown chapter '42'; valid chapters are: 00, 01, 02"),
        (["regenerate", "--notebooks", "/nonexistent"], "does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_line_errors(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1


def test_output_dir_that_is_a_file_and_negative_timeout_are_refused(tmp_path):
    a_file = tmp_path / "chapters.txt"
    a_file.write_text("not a folder")
    # before: a traceback (FileExistsError) after the chapter had run
    proc = run_cli("regenerate", "--only", "01", "--output-dir", str(a_file))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--output-dir {a_file} is a file, not a folder; pass a folder" in proc.stderr
    # before: accepted
    proc = run_cli("regenerate", "--only", "01", "--timeout", "-1",
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "timeout must be a positive number of seconds per cell, got -1" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_grid_with_a_malformed_record_is_one_line(tmp_path):
    from mtvae.experiments import get_grid

    run = get_grid("hetero", "smoke").runs()[0]
    bad = tmp_path / "hetero-smoke" / f"{run.id}.json"
    bad.parent.mkdir()
    bad.write_text('{"id": 3}')
    proc = run_cli("grid", "hetero", "--dry-run", "--results", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"run record {bad} is malformed (no string 'id'); delete it to rerun" in proc.stderr


QUICK_CHAPTER = """
    # Trains one tiny model through a cached run, a checkpoint and the training log

    ```{code-cell} ipython3
    :tags: [parameters, remove-cell]

    profile = "smoke"
    device = "auto"
    seed = 0
    ```

    ```{code-cell} ipython3
    from mtvae.data import load
    from mtvae.models import VAE
    from mtvae.results import cache_dir, cached_run
    from mtvae.train import fit

    data = load("digits", binarize="dynamic", train_size=100)

    def compute():
        model = VAE(data.x_shape, 2, hidden=(8,))
        res = fit(model, data, epochs=2, progress="log", checkpoint=cache_dir() / "q" / "m.pt")
        return {"val": res.best_val}

    record = cached_run("ch01-smoke", "quick", {"seed": seed}, compute)
    print("recorded", "val" in record["metrics"])
    ```
    """


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _git_status():
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_quick_check_keeps_every_write_under_output_dir(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _chapter(src, "01_quick.md", QUICK_CHAPTER)
    out = tmp_path / "x"
    env_free = {k: v for k, v in os.environ.items()
                if k not in ("MTVAE_RESULTS", "MTVAE_CACHE", "MTVAE_LOGS", "MTVAE_LOG")}
    watched = [REPO / "results", REPO / ".cache", REPO / "book" / "chapters"]
    before = ([_tree(f) for f in watched], _git_status())

    def quick():
        proc = subprocess.run(
            [sys.executable, "-m", "mtvae", "regenerate", "--profile", "smoke", "--only", "01",
             "--notebooks", str(src), "--output-dir", str(out)], cwd=REPO,
            env={**env_free, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
            timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads((out / "manifest.json").read_text())["chapters"]["01_quick"]

    cold = quick()
    # before: results/ch01-smoke/ and .cache/ appeared in the checkout
    assert ([_tree(f) for f in watched], _git_status()) == before
    assert len(list((out / "results" / "ch01-smoke").glob("*.json"))) == 1
    assert (out / "cache" / "q" / "m.pt").exists() and (out / "logs" / "01_quick.log").exists()
    assert cold["cold"] is True and cold["runs_recorded"] == 1
    assert cold["checkpoints_written"] == 1 and cold["cold_wall_seconds"] == cold["wall_seconds"]
    cached = quick()
    assert cached["cold"] is False and cached["runs_recorded"] == 0
    assert cached["cached_wall_seconds"] == cached["wall_seconds"]
    assert cached["cold_wall_seconds"] == cold["wall_seconds"]  # both kept, separately
    nb = nbformat.read(out / "01_quick.ipynb", as_version=4)
    assert "recorded True" in "".join(o.get("text", "") for c in nb.cells
                                      if c.cell_type == "code" for o in c.outputs)


def _chapter(folder: Path, name: str, body: str) -> None:
    cells = textwrap.dedent(body)
    (folder / name).write_text(HEADER + cells)


@pytest.mark.slow
def test_regenerate_executes_chapters_and_writes_manifest(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _chapter(src, "01_tiny.md", """
        # Tiny

        ```{code-cell} ipython3
        :tags: [parameters, remove-cell]

        profile = "smoke"
        device = "auto"
        seed = 0
        ```

        ```{code-cell} ipython3
        print(f"profile={profile} seed={seed} batch={__import__('os').environ['MTVAE_BATCH']}")
        ```
        """)
    _chapter(src, "02_broken.md", """
        # Broken

        ```{code-cell} ipython3
        :tags: [parameters]

        profile = "smoke"
        ```

        ```{code-cell} ipython3
        raise ValueError("this chapter is broken")
        ```
        """)
    _chapter(src, "03_unparameterised.md", """
        # No parameters

        ```{code-cell} ipython3
        print("hello")
        ```
        """)
    out = tmp_path / "chapters"
    ok = run_cli("regenerate", "--profile", "smoke", "--device", "cpu", "--only", "01",
                 "--seed", "3", "--notebooks", str(src), "--output-dir", str(out), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    nb = nbformat.read(out / "01_tiny.ipynb", as_version=4)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "profile=smoke seed=3 batch=1" in outputs
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["chapters"]["01_tiny"]
    assert entry["profile"] == "smoke" and entry["device"] == "cpu" and entry["seed"] == 3
    assert entry["wall_seconds"] > 0 and {"sha", "dirty"} <= set(entry["git"])
    assert manifest["versions"]["torch"]
    assert entry["run_records"] == 0 and entry["run_records_seconds"] == 0.0
    # the snapshot of the grids a chapter 01 reads, for mtvae.staleness
    assert entry["grids"] == {"beta": {"records": 0, "latest": ""}}

    bad = run_cli("regenerate", "--profile", "smoke", "--device", "cpu", "--only", "02",
                  "--notebooks", str(src), "--output-dir", str(out), cwd=tmp_path)
    assert bad.returncode == 2
    assert "chapter 02_broken failed in cell 3: ValueError: this chapter is broken" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (out / "02_broken.ipynb").exists()  # no broken chapter left behind
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["chapters"]) == {"01_tiny"}

    noparams = run_cli("regenerate", "--only", "03", "--notebooks", str(src),
                       "--output-dir", str(out), cwd=tmp_path)
    assert noparams.returncode == 2
    assert "has no cell tagged 'parameters'" in noparams.stderr


def test_bench_moo_prints_json_rows():
    # --quick times the activation space only; a parameter-space spec is timed when named
    out = run_cli("bench", "moo", "--quick", "--json", "--device", "cpu",
                  "--methods", "pcgrad", "gradnorm", "pcgrad@parameter")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {(r["method"], r["space"]) for r in rows} == {
        ("sum", "-"), ("pcgrad", "activation"), ("gradnorm", "activation"),
        ("pcgrad", "parameter")}
    for r in rows:
        assert set(r) >= {"method", "space", "device", "step_ms", "ratio_to_sum", "ratio_min",
                          "ratio_max", "note"}
        assert r["step_ms"] > 0 and r["tasks"] >= 10 and r["batch"] == 256
    assert next(r for r in rows if r["method"] == "sum")["ratio_to_sum"] == 1.0


def test_bench_moo_unknown_method_is_one_line():
    out = run_cli("bench", "moo", "--quick", "--methods", "pcgard")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("mtvae: error: unknown MOO method 'pcgard'")
    assert "Traceback" not in out.stderr


def test_grid_dry_run_lists_runs_and_their_status(tmp_path):
    out = run_cli("grid", "hetero", "--profile", "smoke", "--dry-run", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "grid hetero-smoke: 12 runs: 0 done, 0 failed, 12 pending"
    assert sum(ln.endswith(" pending") for ln in lines[:-1]) == 12
    assert any("baseline" in ln and "dataset=wine" in ln for ln in lines)
    assert not (tmp_path / "hetero-smoke").exists()  # a dry run writes nothing


def test_grid_dry_run_shows_the_shards_runs(tmp_path):
    """``--dry-run --shard i/n`` lists what ``--shard i/n`` would run: disjoint shards that
    together make up the grid."""
    ids = []
    for i in (1, 2, 3):
        out = run_cli("grid", "hetero", "--profile", "smoke", "--dry-run", "--shard", f"{i}/3",
                      "--results", str(tmp_path))
        assert out.returncode == 0, out.stderr
        ids.append(set(re.findall(r"\b[a-z]+-[0-9a-f]{10}\b", out.stdout)))
    assert all(ids) and sum(map(len, ids)) == 12 and len(set().union(*ids)) == 12


def test_grid_runs_resumes_and_reports(tmp_path):
    first = run_cli("grid", "hetero", "--device", "cpu", "--results", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "grid hetero-smoke: 12 runs: 12 done, 0 skipped (recorded), 0 failed" in first.stdout
    assert "runs/min" in first.stdout
    assert "[12/12] ok" in first.stderr  # one log line per run when stderr is not a terminal
    records = list((tmp_path / "hetero-smoke").glob("*.json"))
    assert len(records) == 12
    again = run_cli("grid", "hetero", "--device", "cpu", "--results", str(tmp_path))
    assert "0 done, 12 skipped (recorded)" in again.stdout
    dry = run_cli("grid", "hetero", "--dry-run", "--results", str(tmp_path))
    assert dry.stdout.splitlines()[-1].endswith("12 done, 0 failed, 0 pending")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grid", "nope"],
         "mtvae: error: unknown grid 'nope'; valid grids are: aux, beta, cvae, hetero"),
        (["grid", "hetero", "--executor", "k8s"],
         "argument --executor: invalid choice: 'k8s' (choose from 'local', 'slurm')"),
        (["grid", "hetero", "--profile", "huge"],
         "argument --profile: invalid choice: 'huge' (choose from 'full', 'smoke')"),
        (["grid", "hetero", "--workers", "0"], "workers must be a positive integer, got 0"),
        (["grid", "hetero", "--executor", "slurm"], "needs Slurm's 'sbatch' on PATH"),
        (["bench", "grid", "--workers", "1"], "N must be ≥ 2"),
    ],
)
def test_grid_errors_are_one_line(args, message, tmp_path):
    proc = run_cli(*args, "--results", str(tmp_path)) if args[0] == "grid" else run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bench_grid_reports_runs_per_minute_for_workers_and_stacks():
    out = run_cli("bench", "grid", "--quick", "--json", "--workers", "2", "--device", "cpu",
                  "--stacks", "1", "2")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["workers"], r["stack"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["runs"] == 4 and r["runs_per_min"] > 0 for r in rows)  # 2 tables x 2 seeds
    assert [r["ratio"] for r in rows if r["stack"] == 1] == [1.0, 1.0]
    assert all(r["threads_per_worker"] == 1 for r in rows)


def test_grid_where_keeps_every_condition_when_the_flag_is_repeated():
    """`--where a=1 --where b=2` once kept only b=2 and silently ran far more runs."""
    from mtvae.__main__ import build_parser

    parse = build_parser().parse_args
    assert parse(["grid", "aux", "--where", "seed=100", "--where", "dataset=mnist5k"]).where \
        == ["seed=100", "dataset=mnist5k"]
    assert parse(["grid", "aux", "--where", "seed=100", "dataset=mnist5k"]).where \
        == ["seed=100", "dataset=mnist5k"]
