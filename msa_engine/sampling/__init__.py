"""Langevin simulations of finite networks: the ground truth of THEORY §7.

``simulate(problem, sampler="marginal"|"full", ...)`` runs batched numba chains in
chunks and returns a :class:`SimulationResult` (a :class:`~msa_engine.results.TheoryResult`
with Monte Carlo error bars and convergence diagnostics).
"""

from __future__ import annotations

from .langevin import METHODS
from .run import SAMPLERS, ChunkRecord, SimulationResult, simulate

__all__ = ["simulate", "SimulationResult", "ChunkRecord", "SAMPLERS", "METHODS"]
