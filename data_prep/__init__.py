"""Readers that turn raw tool-use traces into restlit's single-turn samples.

``prepare(inputs, out_dir, ...)`` is the whole pipeline (``restlit prepare`` wraps it);
``load_samples(dir)`` and ``Sample.from_row(row)`` read its output back. Modules: ``inputs``
(streaming files), ``toolace`` / ``sharegpt`` / ``chat`` / ``xlam`` / ``hammer`` / ``toolrl`` (one
reader per layout, ``readers`` detects which), ``records`` (what readers produce), ``schema``
(tool schemas -> JSON Schema, argument coercion) and ``pytypes`` (Python annotations -> JSON
Schema), ``decompose`` (one sample per assistant turn), ``masking`` (Hammer-style name masking),
``export`` (samples in the chat layout), ``samples`` (row schema), ``output`` (the output
directory's checks and atomic replace), ``pipeline`` (orchestration: options, inputs, workers,
staging), ``process`` (per-record validation, rendering and splitting), ``arrow_writer`` (rows
-> Arrow files and the saved dataset), ``manifest`` (counts and ``manifest.json``).
Nothing here imports torch; pyarrow and datasets are imported only when writing or loading.
"""

from restlit.data_prep.pipeline import Manifest, prepare
from restlit.data_prep.samples import Sample, load_samples

__all__ = ["Manifest", "Sample", "load_samples", "prepare"]
