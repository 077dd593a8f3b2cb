"""Rows -> Arrow on disk: one stream file (and optionally a parquet file) per split, written in
batches so memory stays bounded, then turned into a saved ``datasets.DatasetDict``.

pyarrow and datasets are imported only when a writer is opened or a dataset saved.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from restlit.data_prep.samples import COLUMNS, arrow_schema

# rows buffered per split before they go to disk as one record batch
_BATCH_ROWS = 2048


class SplitWriter:
    """Rows of one split -> an Arrow stream file (and a parquet file), in batches."""

    def __init__(self, arrow_path: Path, parquet_path: Path | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = arrow_schema()
        self.path = arrow_path
        self._sink = pa.OSFile(str(arrow_path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._parquet = pq.ParquetWriter(str(parquet_path), self.schema) if parquet_path else None
        self._columns: dict[str, list] = {name: [] for name, _ in COLUMNS}
        self.rows = 0

    def extend(self, columns: dict[str, list]) -> None:
        """Append rows given column-wise (every column the same length)."""
        for name, values in self._columns.items():
            values.extend(columns[name])
        self.rows += len(columns["id"])
        if len(self._columns["id"]) >= _BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Write the buffered rows as one record batch (to both files) and start a new buffer."""
        import pyarrow as pa

        if not self._columns["id"]:
            return
        batch = pa.RecordBatch.from_pydict(self._columns, schema=self.schema)
        self._writer.write_batch(batch)
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        self._columns = {name: [] for name, _ in COLUMNS}

    def close(self) -> None:
        """Write the rows still buffered and close the files."""
        self._flush()
        self._writer.close()
        self._sink.close()
        if self._parquet is not None:
            self._parquet.close()


def save_dataset(staging: Path, writers: dict[str, SplitWriter], fingerprint_seed: str) -> None:
    """Turn the staged Arrow streams into a DatasetDict saved at ``staging`` (deterministic)."""
    import datasets
    from datasets.table import MemoryMappedTable
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    splits = {}
    for name, writer in writers.items():
        table = MemoryMappedTable.from_file(str(writer.path))
        # fingerprint from the inputs and options, not from temporary paths: reruns are identical
        fingerprint = hashlib.sha256(f"{fingerprint_seed}\x00{name}".encode()).hexdigest()[:16]
        splits[name] = datasets.Dataset(table, split=datasets.NamedSplit(name), fingerprint=fingerprint)
    # the caller owns progress reporting; datasets' own bars would interleave with it
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        # datasets computes 0 shards for an empty split and then cannot load it back: ask for
        # one shard there; other splits keep datasets' size-based sharding
        empty = {name: 1 for name, ds in splits.items() if ds.num_rows == 0}
        datasets.DatasetDict(splits).save_to_disk(str(staging), num_shards=empty or None)
    finally:
        if not was_disabled:
            enable_progress_bars()
    del splits
    shutil.rmtree(staging / ".arrow")
