#!/usr/bin/env python3
"""Reads a logferry Parquet archive with independent readers (pyarrow, DuckDB) and prints what
they see as one JSON document, for the tests and for anyone checking an archive by hand.

    read_parquet.py ROOT [--sql QUERY]

For every *.parquet file under ROOT: its schema (name, type, nullable), its rows as pyarrow
reads them (timestamps as ISO text) and the Hive-style partitions its path names. Then DuckDB's
read_parquet(ROOT/**/*.parquet, hive_partitioning = true, union_by_name = true): the row count,
and the result of QUERY against the view `archive` when --sql is given.
"""
import argparse
import json
import pathlib

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def plain(v):
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def rows(t):
    try:
        return [{k: plain(v) for k, v in r.items()} for r in t.to_pylist()]
    except (ValueError, OverflowError):
        # A time Python's datetime cannot hold (year 0, past 9999): microseconds since the epoch.
        cols = [
            c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in t.columns
        ]
        return pa.table(cols, names=t.column_names).to_pylist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--sql", action="append", default=[])
    a = ap.parse_args()
    root = pathlib.Path(a.root)
    files = []
    for f in sorted(root.rglob("*.parquet")):
        t = pq.read_table(f)
        meta = pq.ParquetFile(f).metadata
        parts = {}
        for seg in f.relative_to(root).parts[:-1]:
            if "=" in seg:
                k, v = seg.split("=", 1)
                parts[k] = v
        files.append(
            {
                "path": str(f.relative_to(root)),
                "schema": [
                    {"name": fld.name, "type": str(fld.type), "nullable": fld.nullable}
                    for fld in t.schema
                ],
                "codecs": sorted(
                    {
                        meta.row_group(g).column(c).compression
                        for g in range(meta.num_row_groups)
                        for c in range(meta.num_columns)
                    }
                ),
                "partitions": parts,
                "rows": rows(t),
            }
        )
    out = {"files": files}
    if files:
        con = duckdb.connect()
        glob = (str(root) + "/**/*.parquet").replace("'", "''")
        con.execute(
            "CREATE VIEW archive AS SELECT * FROM read_parquet("
            f"'{glob}', hive_partitioning = true, union_by_name = true)"
        )
        out["duckdb_rows"] = con.execute("SELECT count(*) FROM archive").fetchone()[0]
        out["sql"] = []
        for q in a.sql:
            cur = con.execute(q)
            cols = [d[0] for d in cur.description]
            out["sql"].append([dict(zip(cols, map(plain, r))) for r in cur.fetchall()])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
