"""What the methodology chapter shows, computed instead of typed: data, settings, models, compute.

Chapter 4 of the book describes the experimental protocol (after the reporting practice of
Demšar, JMLR 2006, and the heterogeneous-data protocol of Nazabal et al. 2020 / Javaloy et
al. 2022). Every number in it comes from here:

* datasets — the bundled tables read through :func:`mtvae.data.load` (rows, columns, type
  counts, cells missing in the source, the MCAR rates the profile's studies use) and every
  other dataset of the registry (shapes, split sizes, tensors), so a dataset added to the
  registry appears without an edit;
* schemas — per table the features of each type;
* settings — the study dataclasses of a :class:`~mtvae.profiles.Profile`, found by
  iterating its fields, so a new study appears on its own;
* models — the parameter count of the models each study trains, built from its settings;
* compute — the regeneration manifest and the run records under ``results/``, and how
  every trained run of a profile stopped (:func:`convergence_table`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from mtvae.data import Dataset, load
from mtvae.data import available as available_datasets
from mtvae.data.schema import FEATURE_TYPES, Feature
from mtvae.data.tables import TABLES
from mtvae.experiments.carry import SUPERSEDED
from mtvae.likelihoods import make_head
from mtvae.profiles import Profile, get_profile
from mtvae.results import compute_seconds

# Studies that use a dataset without naming it in their settings (the rest is found by
# scanning the settings for dataset names). Extend when a study reads a fixed dataset.
IMPLICIT_DATASETS: dict[str, tuple[str, ...]] = {
    "vae": ("mnist5k", "ppca"), "vq": ("mnist5k",),
    "multimodal": ("paired-digits",),
}


def _profile(profile: Profile | str) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def studies(profile: Profile | str) -> dict[str, Any]:
    """The study settings of a profile, ``{field name: dataclass}``, in declaration order."""
    p = _profile(profile)
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)
            if dataclasses.is_dataclass(getattr(p, f.name))}


def study_title(settings: Any) -> str:
    """First line of a study dataclass's docstring, e.g. "Settings of Chapter 1 (...)"."""
    doc = inspect.getdoc(type(settings)) or type(settings).__name__
    return doc.splitlines()[0].removeprefix("Settings of ").rstrip(".")


@cache
def _loaded(name: str) -> Dataset:
    """A registry dataset with its default options; tables with no cell hidden (cached)."""
    return load(name, missing_rate=0.0) if name in TABLES else load(name)


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """``(setting name, value)`` for every scalar in nested settings (dicts, lists, tuples)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, str(k))
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


def dataset_usage(profile: Profile | str) -> dict[str, dict[str, list[Any]]]:
    """Per dataset: the studies that use it, their MCAR rates and their row caps.

    A study uses a dataset when any of its settings (nested ones included) is the dataset's
    name, or when :data:`IMPLICIT_DATASETS` says so; rates are the numbers under settings
    whose name contains ``missing_rate``, caps those under ``max_rows`` (or, per table, a
    study's ``row_caps`` pairs). ``uncapped`` says whether some study uses all of its rows
    (so a capped use by one study does not hide the full table another one trains on).
    """
    names = set(available_datasets())
    usage: dict[str, dict[str, list[Any]]] = {}
    for study, s in studies(profile).items():
        leaves = list(_leaves(dataclasses.asdict(s)))
        used = {v for _, v in leaves if isinstance(v, str) and v in names}
        used |= set(IMPLICIT_DATASETS.get(study, ())) & names
        rates = {float(v) for k, v in leaves if "missing_rate" in k
                 and isinstance(v, (int, float)) and not isinstance(v, bool)}
        caps = {int(v) for k, v in leaves if k == "max_rows" and isinstance(v, int)}
        per_table = dict(getattr(s, "row_caps", ()) or ())  # e.g. the tables grid's caps
        for name in sorted(used):
            entry = usage.setdefault(name, {"studies": [], "missing_rates": [], "max_rows": [],
                                            "uncapped": False})
            entry["studies"].append(study)
            entry["missing_rates"] = sorted(set(entry["missing_rates"]) | rates)
            own = {int(per_table[name])} if name in per_table else caps
            entry["max_rows"] = sorted(set(entry["max_rows"]) | own)
            entry["uncapped"] = bool(entry["uncapped"] or not own)
    return usage


def _pct(values: list[float]) -> str:
    return ", ".join(f"{100 * v:g}" for v in values) if values else "–"


def table_summary(profile: Profile | str) -> pd.DataFrame:
    """One row per bundled table, computed by loading it (no cell hidden)."""
    usage = dataset_usage(profile)
    rows = []
    for name, table in TABLES.items():
        ds = _loaded(name)
        schema, n = ds.info["schema"], int(ds.info["n_rows"])
        use = usage.get(name, {"studies": [], "missing_rates": [], "max_rows": [],
                               "uncapped": False})
        caps = sorted({min(n, int(c)) for c in use["max_rows"]}
                      | ({n} if use["studies"] and use["uncapped"] else set()))
        rows.append({
            "dataset": name, "rows": n, "columns": len(schema), **schema.type_counts(),
            "missing in source (%)": 100 * ds.info["n_missing_source"] / (n * len(schema)),
            "MCAR rates (%)": _pct(use["missing_rates"]),
            "rows used": ", ".join(map(str, caps)) or "–",
            "studies": ", ".join(use["studies"]) or "–", "source": table.source,
        })
    return pd.DataFrame(rows).set_index("dataset")


def source_missing(name: str) -> pd.Series:
    """Fraction of each column's cells that are empty in the source table."""
    ds = _loaded(name)
    mask = torch.cat([s.tensors["mask"] for s in ds.splits().values()])
    return pd.Series((1 - mask.mean(0)).tolist(), index=ds.info["schema"].names)


def mcar_counts(name: str, rate: float, seed: int = 0) -> pd.DataFrame:
    """Per column of a table: known cells, cells hidden by the MCAR mask, round(rate * known)."""
    ds = load(name, missing_rate=rate, mask_seed=seed)
    parts = ds.splits().values()
    mask = torch.cat([s.tensors["mask"] for s in parts])
    score = torch.cat([s.tensors["score"] for s in parts])
    known = (mask + score).sum(0)
    return pd.DataFrame({"known": known.long().tolist(), "hidden": score.sum(0).long().tolist(),
                         "round(rate × known)": [round(rate * int(k)) for k in known]},
                        index=pd.Index(ds.info["schema"].names, name="column"))


def schema_listing() -> pd.DataFrame:
    """Per table (rows) the features of each type (columns); ``cat`` shows ``name (k)``."""
    def show(f: Feature) -> str:
        return f"{f.name} ({f.k})" if f.type == "cat" else f.name

    return pd.DataFrame({name: {t: ", ".join(show(f) for f in table.schema if f.type == t)
                                or "–" for t in FEATURE_TYPES}
                         for name, table in TABLES.items()}).T.rename_axis("dataset")


def feature_types() -> pd.DataFrame:
    """Per feature type: its likelihood head, what the head models, decoder outputs."""
    rows = []
    for t in FEATURE_TYPES:
        head = make_head(Feature("x", t, 3 if t == "cat" else 1))
        doc = (inspect.getdoc(type(head)) or "").splitlines()[0]
        rows.append({"type": f"{t}(k)" if t == "cat" else t, "head": type(head).__name__,
                     "likelihood": doc.split(":", 1)[-1].strip().rstrip("."),
                     "decoder outputs": "k" if t == "cat" else head.n_params})
    return pd.DataFrame(rows).set_index("type")


def other_datasets(profile: Profile | str | None = None) -> pd.DataFrame:
    """Every registry dataset that is not a bundled table, loaded with its defaults.

    With a ``profile``, a ``studies`` column names the studies that use each dataset.
    """
    usage = dataset_usage(profile) if profile is not None else {}
    rows = []
    for name in available_datasets():
        if name in TABLES:
            continue
        ds = _loaded(name)
        x = ds.train.x
        shape = "×".join(map(str, ds.x_shape))
        extra = {k: "×".join(map(str, v.shape[1:])) or "scalar"
                 for k, v in ds.train.tensors.items() if k != "x"}
        rows.append({"dataset": name, "example": shape, "train": len(ds.train),
                     "val": len(ds.val), "test": len(ds.test),
                     "classes": ds.n_classes if ds.n_classes is not None else "–",
                     "values": f"[{float(x.min()):.3g}, {float(x.max()):.3g}]",
                     "other tensors": ", ".join(f"{k} ({v})" for k, v in extra.items()) or "–"})
        if profile is not None:
            rows[-1]["studies"] = ", ".join(usage.get(name, {}).get("studies", [])) or "–"
    return pd.DataFrame(rows).set_index("dataset")


def split_text(name: str) -> str:
    """``"4000/500/500"``: train/validation/test sizes of a dataset as loaded."""
    return "/".join(str(len(s)) for s in _loaded(name).splits().values())


# ------------------------------------------------------------------------------- models

ModelBuilder = Callable[[Any], dict[str, nn.Module]]


def _vae_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.models import VAE

    return {"MLP VAE": VAE((1, 28, 28), s.latent_dim, hidden=s.hidden),
            "conv VAE": VAE((1, 28, 28), s.latent_dim, arch="conv")}


def _vq_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.models import VAE, Classifier, CodePrior
    from mtvae.studies import vqvaes as V

    study = V.Study(Profile("describe", "", vq=s), device="cpu")
    vq = V.build_vq(V.vq_config(study, seed=0))
    prior = V.prior_config(study, 0, {})
    return {"VQ-VAE": vq,
            "VQ-VAE + label head": V.build_vq(V.vq_config(study, seed=0, n_classes=10)),
            "code prior": CodePrior(vq.num_codes, vq.grid, prior["d_model"], prior["layers"],
                                    prior["heads"], prior["dropout"]),
            "grid VAE": VAE((1, 28, 28), 49 * s.code_dim, arch="grid"),
            "classifier": Classifier()}


def _hetero_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.models import HeteroVAE

    return {f"HeteroVAE ({d})": HeteroVAE(TABLES[d].schema, hidden=s.hidden, depth=s.depth)
            for d in s.datasets if d in TABLES}


def _aux_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.data.shapes import FACTOR_NAMES, FACTOR_SIZES
    from mtvae.models import MultitaskVAE
    from mtvae.models.multitask import factor_targets

    targets = factor_targets(list(FACTOR_NAMES), list(FACTOR_NAMES))
    sizes = dict(zip(FACTOR_NAMES, FACTOR_SIZES, strict=True))
    return {"VAE + label head": MultitaskVAE((1, 28, 28), s.latent_dim, {"y_digit": 10},
                                             targets={"y_digit": "y"}, hidden=s.hidden),
            "VAE + factor heads": MultitaskVAE((1, 28, 28), s.latent_dim,
                                               {k: int(sizes[k[2:]]) for k in targets},
                                               targets=targets, hidden=s.hidden)}


def _multimodal_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.models import MultimodalVAE

    return {f"multimodal VAE ({f})": MultimodalVAE(s.latent_dim, f, hidden=s.hidden)
            for f in s.fusions}


def _hier_models(s: Any) -> dict[str, nn.Module]:
    from mtvae.models import HierarchicalVAE

    return {"hierarchical VAE": HierarchicalVAE((1, 28, 28), s.z1_dim, s.z2_dim,
                                                hidden=tuple(s.hidden))}


# Study field -> the models it trains. Add an entry when a study brings a new model. The
# ``grid`` (the single-stage ``hetero`` grid) and ``tables`` (the tables grid, Chapters 3-5)
# studies train the heterogeneous VAE on their own tables.
MODEL_BUILDERS: dict[str, ModelBuilder] = {
    "vae": _vae_models, "vq": _vq_models, "grid": _hetero_models,
    "aux_grid": _aux_models, "multimodal": _multimodal_models, "hier_grid": _hier_models,
    "tables": _hetero_models,
}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_summary(profile: Profile | str) -> pd.DataFrame:
    """One row per model of every study that has a builder: parameters, latent size, parts."""
    rows = []
    for study, s in studies(profile).items():
        if study not in MODEL_BUILDERS:
            continue
        torch.manual_seed(0)
        for name, model in MODEL_BUILDERS[study](s).items():
            parts = ", ".join(f"{k} {n_parameters(m):,}" for k, m in model.named_children()
                              if n_parameters(m))
            latent = getattr(model, "latent_dim", None)
            rows.append({"study": study, "model": name, "parameters": n_parameters(model),
                         "latent": latent if latent is not None else "–", "parts": parts})
    return pd.DataFrame(rows).set_index(["study", "model"])


def studies_without_models(profile: Profile | str) -> list[str]:
    return [s for s in studies(profile) if s not in MODEL_BUILDERS]


GRID_COLUMNS = ["blocks", "runs", "varying settings (values)"]


def grid_table(profile: Profile | str) -> pd.DataFrame:
    """Per named experiment grid and run kind: its blocks, its runs and what varies.

    Runs are counted once (a run two blocks both produce, such as a family's default
    configuration when validation chose it, is one run), and the varying settings are the
    config keys that take more than one value among the kind's runs, each with its number of
    values. A staged grid (:data:`mtvae.experiments.grids.STAGED`) lists the blocks its
    records so far allow: its later blocks join as its earlier ones finish.
    """
    from mtvae.experiments import available_grids, get_grid

    rows = []
    for name in available_grids():
        spec = get_grid(name, _profile(profile).name)
        runs = spec.runs()
        for kind in dict.fromkeys(b.kind for b in spec.blocks):
            values: dict[str, set[str]] = {}
            mine = [r for r in runs if r.kind == kind]
            for run in mine:
                for key, value in run.config.items():
                    values.setdefault(key, set()).add(repr(value))
            varying = ", ".join(f"{k} ({len(v)})" for k, v in values.items() if len(v) > 1)
            rows.append({"grid": spec.name, "kind": kind,
                         "blocks": sum(b.kind == kind for b in spec.blocks), "runs": len(mine),
                         "varying settings (values)": varying or "–"})
    return pd.DataFrame(rows, columns=["grid", "kind", *GRID_COLUMNS]).set_index(
        ["grid", "kind"])


# ------------------------------------------------------------------------------ compute


def compute_table(manifest: dict[str, Any]) -> pd.DataFrame:
    """Per executed chapter: profile, device, wall minutes and the run records it read."""
    rows = {}
    for chapter, c in manifest.get("chapters", {}).items():
        rows[chapter] = {"profile": c.get("profile"), "device": c.get("device"),
                         "device name": c.get("device_name"),
                         "wall (min)": c.get("wall_seconds", 0.0) / 60,
                         "run records": c.get("run_records", 0),
                         "record compute (min)": c.get("run_records_seconds", 0.0) / 60}
    columns = ["profile", "device", "device name", "wall (min)", "run records",
               "record compute (min)"]  # also when no chapter has run yet (no manifest)
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("chapter")


def _folder_records(folder: Path, *, superseded: bool = True) -> Iterator[dict[str, Any]]:
    """Every JSON record under ``folder`` (nested folders included), parsed as it is;
    without those under ``superseded/`` (records a raised cap replaced, which no chapter
    reads: :mod:`mtvae.experiments.carry`) unless ``superseded``."""
    for path in sorted(folder.rglob("*.json")):
        if superseded or SUPERSEDED not in path.relative_to(folder).parts[:-1]:
            yield json.loads(path.read_text())


def _profile_folders(root: str | Path, profile: str) -> list[Path]:
    """The results folders of a profile, ``<grid>-<profile>`` and ``chNN-<profile>``."""
    return sorted(p for p in Path(root).glob(f"*-{profile}") if p.is_dir())


def records_table(root: str | Path, profile: str) -> pd.DataFrame:
    """Per folder ``results/<grid>-<profile>``: records (failed ones; superseded ones, which
    a raised cap replaced and no chapter reads, but whose compute was spent), compute (a
    stacked job counted once, :func:`mtvae.results.compute_seconds`), devices."""
    rows = {}
    for folder in _profile_folders(root, profile):
        records = list(_folder_records(folder))
        count, seconds = len(records), compute_seconds(records)
        devices = {str(r.get("device", "?")) for r in records}
        failed = sum(r.get("status") == "failed" for r in records)
        current = sum(1 for _ in _folder_records(folder, superseded=False))
        if count:
            rows[folder.name] = {"records": count, "failed": failed,
                                 "superseded": count - current,
                                 "compute (min)": seconds / 60,
                                 "devices": ", ".join(sorted(devices))}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["records", "failed", "superseded", "compute (min)",
                                           "devices"]
                                  ).rename_axis("results folder")


CONVERGENCE_COLUMNS = ["trained runs", "convergence recorded", "not recorded",
                       "stopped by patience", "median best / cap"]


def _best_share(metrics: dict[str, Any]) -> float | None:
    """Best step (or epoch) as a share of its cap; ``None`` when either is not recorded."""
    for best, cap in (("best_step", "step_cap"), ("best_epoch", "epoch_cap")):
        if metrics.get(best) is not None and metrics.get(cap):
            return float(metrics[best]) / float(metrics[cap])
    return None


def _trained(metrics: dict[str, Any]) -> bool:
    """Whether a record is of a trained run: it names a best step or epoch (of any part)."""
    return any(k.endswith(("best_epoch", "best_step")) for k in metrics)


def convergence_table(root: str | Path, profile: str) -> pd.DataFrame:
    """Per results folder of ``profile``: how its trained runs stopped.

    A trained run (an ``ok`` record whose metrics name a best epoch or step; references,
    baselines and failed runs are left out) has its convergence *recorded* when its metrics
    hold ``stopped_early`` and a best step with its ``step_cap`` (or a best epoch with its
    ``epoch_cap``); records of the older protocol, which lack them, are counted as *not
    recorded*. Records under ``superseded/`` are no run of the study and are not counted.
    Over the recorded runs: the share stopped by patience (rather than by the cap) and the
    median of best step / cap. Both are NaN in a folder with none recorded.
    """
    rows = {}
    for folder in _profile_folders(root, profile):
        trained, stopped, shares = 0, [], []
        for record in _folder_records(folder, superseded=False):
            metrics = record.get("metrics") or {}
            if record.get("status") == "failed" or not _trained(metrics):
                continue
            trained += 1
            share = _best_share(metrics)
            if share is not None and metrics.get("stopped_early") is not None:
                stopped.append(bool(metrics["stopped_early"]))
                shares.append(share)
        if trained:
            n = len(stopped)
            rows[folder.name] = {
                "trained runs": trained, "convergence recorded": n, "not recorded": trained - n,
                "stopped by patience": sum(stopped) / n if n else float("nan"),
                "median best / cap": float(pd.Series(shares).median()) if n else float("nan")}
    return pd.DataFrame.from_dict(rows, orient="index", columns=CONVERGENCE_COLUMNS
                                  ).rename_axis("results folder")


CONVERGED_SHARE = 0.9
"""The book's convergence rule: a set of runs counts as converged when at least this share of
them stopped by patience rather than at their cap."""


def _folders(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def convergence_sentence(table: pd.DataFrame, profile: str,
                         rule: float = CONVERGED_SHARE) -> str:
    """The prose of :func:`convergence_table`: which folders record convergence, which meet
    ``rule``, where the best points lie, and how many trained runs predate the fields."""
    if table.empty:
        return f"No trained run of the {profile} profile is recorded under `results/` yet."
    recorded = table[table["convergence recorded"] > 0]
    meets = recorded[recorded["stopped by patience"] >= rule]
    text = (f"Of the {len(table)} results folders of the {profile} profile with trained runs, "
            f"{len(recorded)} record how their runs stopped ({_folders(list(recorded.index))})")
    if len(recorded):
        text += (f"; {len(meets)} of them meet the rule that at least {100 * rule:.0f} % of "
                 "the runs stopped by patience")
        if 0 < len(meets) < len(recorded):
            text += f" ({_folders(list(meets.index))})"
        low = recorded["stopped by patience"].idxmin()
        share = float(recorded.loc[low, "stopped by patience"])
        text += (" (in each of them every run did)" if share == 1 else
                 f" (the lowest share: {100 * share:.1f} %, in `{low}`)")
        text += "; per folder, the median best step or epoch lies at " + ", ".join(
            f"{100 * v:.0f} % of the cap in `{f}`"
            for f, v in recorded["median best / cap"].items())
    text += "."
    unrecorded = table[table["not recorded"] > 0]
    if len(unrecorded):
        n = int(unrecorded["not recorded"].sum())
        text += (f" The {n:,} trained run{'' if n == 1 else 's'} of "
                 f"{_folders(list(unrecorded.index))} predate{'s' if n == 1 else ''} these "
                 "fields: whether they "
                 "stopped by patience or at their cap is not recorded, so their numbers may "
                 "be those of a budget rather than of a converged model.")
    return text
