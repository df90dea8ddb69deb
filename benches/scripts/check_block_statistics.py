#!/usr/bin/env python3
"""Checks the column chunk statistics of every block under a data directory
against the values in the chunk, with pyarrow (a reader independent of
Spanlake's writer): for each top-level column with statistics, the minimum
and maximum (exact, or a bound where the writer truncated a string) and the
null count. Prints the chunks checked and the wrong ones.

    python3 benches/scripts/check_block_statistics.py <data dir>
"""
import glob
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def check(path, column, st):
    """Whether statistics `st` fit the values of `column` (a pyarrow array)."""
    if st.has_null_count and column.null_count != st.null_count:
        return False
    if not st.has_min_max:
        return True
    if pa.types.is_fixed_size_binary(column.type) or pa.types.is_string(column.type):
        values = [v.encode() if isinstance(v, str) else v for v in column.to_pylist() if v is not None]
        lo, hi = min(values), max(values)
        smin, smax = st.min, st.max
        if isinstance(smin, str):
            smin, smax = smin.encode(), smax.encode()
        exact_min = getattr(st, "is_min_exact", True)
        exact_max = getattr(st, "is_max_exact", True)
        return (lo == smin if exact_min else smin <= lo) and (hi == smax if exact_max else hi <= smax)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    bounds = pc.min_max(column)
    return bounds["min"].as_py() == st.min_raw and bounds["max"].as_py() == st.max_raw


def main(root):
    files = sorted(glob.glob(root + "/**/*.parquet", recursive=True))
    checked = wrong = rows = 0
    for f in files:
        parquet = pq.ParquetFile(f)
        table = parquet.read()
        rows += table.num_rows
        start = 0
        for g in range(parquet.metadata.num_row_groups):
            group = parquet.metadata.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                name = chunk.path_in_schema
                if "." in name or chunk.statistics is None:
                    continue
                column = table.column(name).slice(start, group.num_rows)
                checked += 1
                if not check(f, column, chunk.statistics):
                    wrong += 1
                    print("wrong:", f, "row group", g, name, chunk.statistics)
            start += group.num_rows
    print(f"{len(files)} blocks, {rows} rows, {checked} column chunks checked against their values, {wrong} wrong")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
