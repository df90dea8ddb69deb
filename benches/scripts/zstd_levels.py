#!/usr/bin/env python3
"""zstd levels for the id and time columns of a block, as Spanlake pages
them: each column's values PLAIN (ids, start_time) or byte stream split
(end_time, duration_ns), cut into pages of 8,192 rows as the block writer
cuts them, then compressed page by page at levels 1, 2 and 3. Prints bytes
per span and compression time per span (best of five) for each. Reads the
largest block under the data directory.

    pip install pyarrow numpy zstandard
    python3 benches/scripts/zstd_levels.py <data dir>
"""
import glob
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

PAGE_ROWS = 8192
COLUMNS = ["trace_id", "span_id", "parent_span_id", "start_time", "end_time", "duration_ns"]
SPLIT = {"end_time", "duration_ns"}


def pages(table, name):
    """The column's pages' value bytes, as the block writer encodes them."""
    column = table.column(name).combine_chunks()
    out = []
    for start in range(0, len(column), PAGE_ROWS):
        page = column.slice(start, PAGE_ROWS)
        if pa.types.is_fixed_size_binary(page.type):
            out.append(b"".join(v for v in page.to_pylist() if v is not None))
            continue
        values = page.cast(pa.int64()).to_numpy()
        if name in SPLIT:
            out.append(values.view(np.uint8).reshape(-1, 8).T.copy().tobytes())
        else:
            out.append(values.tobytes())
    return out


def main():
    blocks = glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True)
    path = max(blocks, key=os.path.getsize)
    table = pq.read_table(path, columns=COLUMNS)
    spans = table.num_rows
    print(f"{path}: {spans} spans")
    print("| column | level | bytes/span | ns/span |")
    print("|---|---|---|---|")
    for name in COLUMNS:
        data = pages(table, name)
        for level in (1, 2, 3):
            compressor = zstandard.ZstdCompressor(level=level)
            best = None
            for _ in range(5):
                start = time.perf_counter()
                size = sum(len(compressor.compress(p)) for p in data)
                took = time.perf_counter() - start
                best = took if best is None else min(best, took)
            print(f"| {name} | {level} | {size / spans:.2f} | {best * 1e9 / spans:.1f} |")


if __name__ == "__main__":
    main()
