"""Where a result came from: git state, device, package versions.

Used by the regeneration manifest and by the provenance note at the top of each chapter.
"""

from __future__ import annotations

import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from mtvae.device import device_name, resolve_device

KEY_PACKAGES = ("mtvae", "torch", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn",
                "torchjd", "papermill", "jupytext", "myst-nb", "jupyter-book", "mlxtend")


# Outputs of regeneration: changes there do not make the *code* that produced them dirty.
GENERATED_PATHS = ("book/chapters", "results")


def git_state(cwd: str | None = None) -> dict[str, object]:
    """Current commit and whether tracked files (other than generated outputs) have
    uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        excluded = [f":(exclude){p}" for p in GENERATED_PATHS]
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded))
    except (OSError, subprocess.SubprocessError):
        return {"sha": "unknown", "dirty": None}
    return {"sha": sha, "dirty": dirty}


def package_versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["cuda"] = torch.version.cuda or "none"
    return out


def provenance(profile: str, device: str) -> dict[str, object]:
    """Everything the provenance note shows, as a dict."""
    dev = resolve_device(device)
    return {"profile": profile, "device": dev.type, "device_name": device_name(dev),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git": git_state(), "versions": package_versions()}


def provenance_note(profile: str, device: str, chapter: str = "NN") -> str:
    """A one-paragraph Markdown note: profile, device, date, versions and commit."""
    p = provenance(profile, device)
    git = p["git"]
    sha = str(git["sha"])[:10] + (" + uncommitted changes" if git["dirty"] else "")
    v = p["versions"]
    return (
        f"**Provenance.** This chapter was executed with the **{p['profile']}** profile on "
        f"**{p['device']}** ({p['device_name']}) on {p['date']}, with mtvae {v['mtvae']}, "
        f"torch {v['torch']} (CUDA {v['cuda']}), commit `{sha}`. "
        "Regenerate it with `python -m mtvae regenerate --profile "
        f"{p['profile']} --only {chapter}`. " + cold_run_note(chapter)
    ).rstrip()


def cold_run_note(chapter: str, manifest_path: Path | None = None) -> str:
    """How long a cold ``full`` run of ``chapter`` takes here, from its shipped records.

    The records of the full profile ship with the repository, the checkpoints of the models
    behind the figures do not (they are tens of MB), so a fresh clone retrains those models.
    The cost is bounded by the runs' own recorded times (each record keeps its training and
    evaluation seconds and its device); the cached time is the manifest's. Empty when the
    chapter has no full-profile records.
    """
    from mtvae.regenerate import Chapter, load_manifest, record_compute
    from mtvae.results import repo_root, results_dir

    compute = record_compute(results_dir(), Chapter(chapter, Path(f"{chapter}.md")), "full")
    if not compute["run_records"]:
        return ""
    minutes = compute["run_records_seconds"] / 60
    text = (f"A cold `full` run on a fresh clone (records ship; the checkpoints of the models "
            f"behind the figures do not) retrains those models: at most the {minutes:.0f} min "
            f"of compute that all {compute['run_records']} of its runs took where their records "
            "were made")
    path = manifest_path or (repo_root() or Path.cwd()) / "book" / "chapters" / "manifest.json"
    entries = load_manifest(path)["chapters"] if path.is_file() else {}
    entry = next((e for k, e in entries.items()
                  if k.startswith(f"{chapter}_") and e.get("profile") == "full"), None)
    cached = entry and entry.get("cached_wall_seconds", entry.get("wall_seconds"))
    if cached:
        text += f"; with every checkpoint cached the chapter executes in {float(cached):.0f} s"
    return text + "."


def manifest_tables(manifest: dict[str, object]) -> tuple[object, object]:
    """The regeneration manifest as two DataFrames: chapters and package versions."""
    import pandas as pd

    chapters = pd.DataFrame.from_dict(manifest.get("chapters", {}), orient="index")
    if not chapters.empty:
        chapters["commit"] = chapters["git"].map(
            lambda g: str(g.get("sha", "unknown"))[:10] + (" (dirty)" if g.get("dirty") else ""))
        chapters = chapters.drop(columns=["git"]).rename_axis("chapter")
    versions = pd.Series(manifest.get("versions", {}), name="version").rename_axis("package")
    return chapters, versions.to_frame()
