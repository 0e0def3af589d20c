"""The command line: clean one-line errors, and regeneration end to end on tiny chapters."""

import json
import os
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
    out = run_cli("bench", "moo", "--quick", "--json", "--device", "cpu",
                  "--methods", "pcgrad", "gradnorm")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {(r["method"], r["space"]) for r in rows} == {
        ("sum", "-"), ("pcgrad", "activation"), ("gradnorm", "activation"),
        ("pcgrad", "parameter"), ("gradnorm", "parameter")}
    for r in rows:
        assert set(r) >= {"method", "space", "device", "step_ms", "ratio_to_sum"}
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
        (["grid", "nope"], "mtvae: error: unknown grid 'nope'; valid grids are: hetero"),
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
def test_bench_grid_reports_runs_per_minute_for_1_and_n_workers():
    out = run_cli("bench", "grid", "--quick", "--json", "--workers", "2", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    one, two = json.loads(out.stdout)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["runs"] == two["runs"] == 12 and one["speedup"] == 1.0
    assert one["runs_per_minute"] > 0 and two["runs_per_minute"] > 0
    assert one["threads_per_worker"] == two["threads_per_worker"] == 1
