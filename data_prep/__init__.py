"""Readers that turn raw tool-use traces into restlit's single-turn samples.

``prepare(inputs, out_dir, ...)`` is the whole pipeline (``restlit prepare`` wraps it);
``load_samples(dir)`` and ``Sample.from_row(row)`` read its output back. Modules: ``inputs``
(streaming files), ``toolace`` / ``xlam`` / ``toolrl`` / ``hammer`` (one reader per layout,
``readers`` picks one), ``schema`` (tool schemas -> JSON Schema), ``decompose`` (one sample per
assistant turn), ``samples`` (row schema), ``pipeline`` (validation, splitting, writing).
Nothing here imports torch; pyarrow and datasets are imported only when writing or loading.
"""

from data_prep.pipeline import Manifest, prepare
from data_prep.samples import Sample, load_samples

__all__ = ["Manifest", "Sample", "load_samples", "prepare"]
