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
        (["regenerate", "--only", "42"], "unknown chapter '42'; valid chapters are: 01"),
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
