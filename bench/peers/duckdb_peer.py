#!/usr/bin/env python3
"""The peers of `flowscope-bench query`: the same five queries timed in DuckDB over the same
Parquet files, and the same spans stored in DuckDB's own format and, when chdb is installed,
in a ClickHouse MergeTree table.

    python3 bench/peers/duckdb_peer.py DATA_DIR --end 2026-11-29T09:50:00Z --trace-id HEX

Prints one JSON object on stdout (progress on stderr). `flowscope-bench query --peer-python`
runs it and puts its figures next to flowscope's. Needs `pip install duckdb` (and optionally
`chdb`); DuckDB gets the same 1 GiB memory limit as flowscope's SQL sandbox.
"""

import argparse
import datetime
import glob
import json
import os
import statistics
import sys
import tempfile
import time


def log(message):
    print(message, file=sys.stderr, flush=True)


def queries(end, trace_id):
    """The five queries, in DuckDB's dialect; the same names and meaning as in bench/src/query.rs."""
    t = f"TIMESTAMPTZ '{end}'"
    return [
        ("count_by_service_1h",
         f"SELECT service_name, count(*) AS spans FROM spans "
         f"WHERE start_time >= {t} - INTERVAL 1 HOUR GROUP BY service_name ORDER BY service_name"),
        ("p99_by_edge_1h",
         f"SELECT p.service_name AS caller, c.service_name AS callee, c.name, "
         f"approx_quantile(c.duration_ns, 0.99) AS p99_ns, count(*) AS calls "
         f"FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id "
         f"WHERE c.start_time >= {t} - INTERVAL 1 HOUR AND p.start_time >= {t} - INTERVAL 61 MINUTE "
         f"GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
        ("error_rate_series_24h",
         f"SELECT date_trunc('hour', start_time) AS hour, count(*) AS spans, "
         f"avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate "
         f"FROM spans GROUP BY 1 ORDER BY 1"),
        ("service_pairs_6h",
         f"SELECT p.service_name AS caller, c.service_name AS callee, count(*) AS calls, "
         f"sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors "
         f"FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id "
         f"WHERE c.start_time >= {t} - INTERVAL 6 HOUR AND p.start_time >= {t} - INTERVAL 361 MINUTE "
         f"GROUP BY 1, 2 ORDER BY 1, 2"),
        ("trace_lookup",
         f"SELECT * FROM spans WHERE trace_id = from_hex('{trace_id}')"),
    ]


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def time_duckdb(files, end, trace_id, runs):
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '1GB'")
    con.execute(f"SET threads = {os.cpu_count()}")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)")
    result = {"duckdb_version": duckdb.__version__, "queries": {}}
    for name, sql in queries(end, trace_id):
        times, rows = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            rows = len(con.execute(sql).fetchall())
            times.append((time.perf_counter() - started) * 1000)
        result["queries"][name] = {"median_ms": statistics.median(times), "rows": rows}
        log(f"  duckdb {name}: median {statistics.median(times):.1f} ms, {rows} rows")
    return result


def duckdb_storage(files, scratch):
    import duckdb

    path = os.path.join(scratch, "spans.duckdb")
    con = duckdb.connect(path)
    con.execute("SET memory_limit = '4GB'")
    con.execute(f"CREATE TABLE spans AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)")
    rows = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    con.execute("CHECKPOINT")
    con.close()
    size = os.path.getsize(path) + (os.path.getsize(path + ".wal") if os.path.exists(path + ".wal") else 0)
    return {"rows": rows, "bytes": size}


def chdb_storage(data_dir, scratch):
    try:
        from chdb import session
    except ImportError:
        return None
    sess = session.Session(os.path.join(scratch, "chdb"))
    sess.query("CREATE DATABASE IF NOT EXISTS bench")
    pattern = os.path.join(os.path.abspath(data_dir), "spans", "date=*", "hour=*", "*.parquet")
    sess.query(
        "CREATE TABLE bench.spans ENGINE = MergeTree ORDER BY (service_name, start_time) "
        f"AS SELECT * FROM file('{pattern}', Parquet)"
    )
    sess.query("OPTIMIZE TABLE bench.spans FINAL")
    answer = sess.query(
        "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = 'bench' AND table = 'spans' AND active",
        "CSV",
    )
    rows, size = (int(x) for x in str(answer).strip().split(","))
    sess.close()
    return {"rows": rows, "bytes": size}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--end", required=True, help="the newest span's start, RFC 3339 UTC")
    parser.add_argument("--trace-id", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-storage", action="store_true")
    args = parser.parse_args()

    files = sorted(glob.glob(os.path.join(args.data_dir, "spans", "date=*", "hour=*", "*.parquet")))
    if not files:
        sys.exit(f"no Parquet files under {args.data_dir}/spans: run flowscope-bench query --keep first")
    end = datetime.datetime.fromisoformat(args.end.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    log(f"duckdb over {len(files)} Parquet files ...")
    result = time_duckdb(files, end, args.trace_id, args.runs)
    result["parquet_bytes"] = sum(os.path.getsize(f) for f in files)
    if not args.no_storage:
        with tempfile.TemporaryDirectory(prefix="flowscope-peer-") as scratch:
            log("loading the spans into DuckDB's own format ...")
            result["duckdb_storage"] = duckdb_storage(files, scratch)
            log("loading the spans into a chDB MergeTree table ...")
            try:
                result["chdb_storage"] = chdb_storage(args.data_dir, scratch)
            except Exception as error:  # chdb is optional; say why it is missing
                log(f"chdb failed: {error}")
                result["chdb_storage"] = {"error": str(error)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
