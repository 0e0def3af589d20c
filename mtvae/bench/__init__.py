"""Benchmarks: ``python -m mtvae bench moo|grid [--quick] [--json]`` (JSON rows).

Speed is checked here, not in timed unit tests: :mod:`.moo` times one training step of every
MOO method against the plain step; :mod:`.grid` measures runs per minute of a small grid.
"""

from mtvae.bench.grid import bench_grid
from mtvae.bench.moo import bench_moo

__all__ = ["bench_grid", "bench_moo"]
