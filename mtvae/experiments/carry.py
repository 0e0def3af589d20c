"""Raising a grid's epoch cap without rerunning what patience already stopped.

Training reads its cap (``epochs``) only to stop: a run that patience stopped at epoch
``e`` before a cap ``C`` is, epoch for epoch, the run with any larger cap (the optimiser,
the data order and the stopping rule never see the cap). So when a profile raises a grid's
cap, :func:`raise_cap` re-labels each such record as the run with the new cap (the config's
``epochs`` and the metric ``epoch_cap`` change; ``carried_from`` keeps the old id and cap),
and moves every other record at an old cap — a run the cap stopped, a failed one, or one of a
configuration the new tuning does not choose (yet) — to ``superseded/`` beside the records,
where no reader looks. What the cap stopped runs again, at the new cap, on the next ``grid``
call; a superseded record that patience stopped is carried back when its run is planned again
(:func:`carry_superseded`: a staged grid plans its evaluation runs only once its tuning is
recorded at the new cap).

A record is written before its predecessor moves, so an interrupted call leaves at most a
record to supersede, which the next call does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtvae.errors import MTVAEError
from mtvae.experiments.spec import GridSpec, Run
from mtvae.results import read_record, results_dir, run_id, write_record

SUPERSEDED = "superseded"


@dataclass
class CapRaise:
    """What :func:`raise_cap` did: records re-labelled to the new cap (``carried``) and
    records moved to ``superseded/`` (``superseded``: their runs are pending again)."""

    grid: str
    cap: int
    carried: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"grid {self.grid}: cap {self.cap} epochs: {len(self.carried)} records stopped "
                f"by patience carried over, {len(self.superseded)} moved to {SUPERSEDED}/ "
                "(their runs are pending at the new cap)")


def _key(kind: str, config: dict[str, Any]) -> str:
    return json.dumps([kind, {k: v for k, v in config.items() if k != "epochs"}],
                      sort_keys=True, default=str)


def _cap(spec: GridSpec) -> int:
    caps = {r.config.get("epochs") for r in spec.runs()}
    if len(caps) != 1 or not isinstance(next(iter(caps)), int):
        raise MTVAEError(f"grid {spec.name} has runs with caps {sorted(map(str, caps))}; "
                         "raise_cap needs one integer cap (`epochs`) for the whole grid")
    return int(next(iter(caps)))


def _stopped_before_cap(record: dict[str, Any]) -> bool:
    """Ok, and stopped by patience before its own cap (not by the cap, nor at it)."""
    m, old = record.get("metrics", {}), record["config"].get("epochs")
    return (record.get("status") != "failed" and isinstance(old, int)
            and bool(m.get("stopped_early")) and int(m.get("epochs_run", old)) < old)


def carries(record: dict[str, Any], cap: int) -> bool:
    """Whether ``record`` is also the run with the larger ``cap``: ok, stopped by patience
    before its own cap (a run the cap stopped, or one stopped at the cap itself, is not)."""
    return _stopped_before_cap(record) and record["config"]["epochs"] < cap


def _supersede(path: Path, out: CapRaise) -> None:
    target = path.parent / SUPERSEDED / path.name
    target.parent.mkdir(exist_ok=True)
    path.replace(target)
    out.superseded.append(path.stem)


def _carry(record: dict[str, Any], run: Run, path: Path) -> None:
    """Write ``record`` (of the same run under a lower cap) as ``run``'s record at ``path``."""
    was = {"id": record["id"], "epoch_cap": record["config"]["epochs"]}
    record = {**record, "config": dict(run.config), "id": run_id(run.kind, dict(run.config)),
              "metrics": {**record["metrics"], "epoch_cap": run.config["epochs"]},
              "carried_from": was}
    write_record(path, record)


def superseded_pool(folder: Path) -> dict[str, Path]:
    """The records under ``folder/superseded/`` that patience stopped, by what identifies
    their run apart from the cap: :func:`carry_superseded` finds a pending run among them."""
    pool = {}
    for path in sorted((folder / SUPERSEDED).glob("*.json")):
        rec = read_record(path)
        if _stopped_before_cap(rec):
            pool[_key(rec["name"], rec["config"])] = path
    return pool


def carry_superseded(pool: dict[str, Path], run: Run, folder: Path) -> bool:
    """Record ``run`` from the superseded record of the same run under a lower cap, when
    ``pool`` (:func:`superseded_pool`) has one that patience stopped; whether it did. A
    staged grid plans its evaluation runs at a raised cap only once its tuning is recorded
    there, so the runner asks this for every run it is about to train."""
    source = pool.get(_key(run.kind, dict(run.config)))
    if source is None or not source.exists():
        return False
    rec = read_record(source)
    if not carries(rec, int(run.config["epochs"])):
        return False
    _carry(rec, run, folder / f"{run.id}.json")
    source.unlink(missing_ok=True)
    return True


def raise_cap(build: Callable[[], GridSpec], root: str | Path | None = None) -> CapRaise:
    """Carry the records of ``build()``'s grid over to its (raised) cap; see the module.

    ``build`` is called again after each pass, since a staged grid plans its evaluation
    runs only once its tuning runs are recorded at the new cap. Records at the grid's cap
    are left alone; records at a larger cap raise an :class:`MTVAEError` (lowering a cap
    would need a rerun)."""
    from mtvae.experiments.claims import describe, holder

    spec = build()
    cap = _cap(spec)
    folder = (Path(root) if root is not None else results_dir()) / spec.name
    for claim in folder.glob("*.claim"):
        held = holder(claim.with_suffix(".json"))
        if held is not None:
            raise MTVAEError(f"{describe(held)} is running {claim.stem} of {spec.name}; stop "
                             "the grid's processes before raising its cap")
    out = CapRaise(spec.name, cap)
    while True:
        records = {p: read_record(p) for p in sorted(folder.glob("*.json"))}
        old = {p: r for p, r in records.items() if r["config"].get("epochs") != cap}
        higher = [p.stem for p, r in old.items()
                  if isinstance(r["config"].get("epochs"), int) and r["config"]["epochs"] > cap]
        if higher:
            raise MTVAEError(f"{len(higher)} records of {spec.name} have a cap above {cap} "
                             f"epochs (e.g. {higher[0]}); lowering a cap needs a rerun, not "
                             "raise_cap")
        by_key = {_key(r["name"], r["config"]): p for p, r in old.items()}
        moved = 0
        for run in spec.runs():
            path = folder / f"{run.id}.json"
            source = by_key.get(_key(run.kind, dict(run.config)))
            if path.exists() or source is None:
                continue
            rec = old.pop(source)
            if carries(rec, cap):
                _carry(rec, run, path)
                out.carried.append(run.id)
                source.unlink()
            else:
                _supersede(source, out)
            moved += 1
        if not moved:
            break
        spec = build()
    for path in old:  # at an old cap and no longer planned (e.g. a configuration not chosen)
        if path.exists():
            _supersede(path, out)
    return out
