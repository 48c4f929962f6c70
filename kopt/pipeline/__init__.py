"""The orchestration layer: ``kopt.optimize`` and the staged pipeline behind it.

:mod:`~kopt.api` (``optimize``/``prepare``), :mod:`~kopt.pipeline.runner` (orders the
stages), :mod:`~kopt.pipeline.stages` (one function per stage), :mod:`~kopt.pipeline.training`
(compile/fit settings and data adapters) and :mod:`~kopt.pipeline.callbacks` (the Keras callbacks a
wrapped model needs in your own ``fit``).
"""

from kopt.pipeline.runner import PipelineResult, run_stages

__all__ = ["PipelineResult", "run_stages"]
