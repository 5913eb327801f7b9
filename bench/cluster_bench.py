#!/usr/bin/env python3
"""Query times of a flowscope cluster against one node over the same spans (issue 24).

Starts s3s-fs on a folder, a standalone flowscope and a cluster (two ingesters and a
receiver that is also the querier, all on one PostgreSQL database and one bucket), sends
the same simulated system (`flowscope loadgen`, same seed, same count) to each, waits for
the flushes, then runs each query `--runs` times on both, alternating, and prints the
medians. Everything listens on 127.0.0.1; nothing is left running.

    python3 bench/cluster_bench.py --flowscope target/release/flowscope \\
        --postgres postgres://flowscope@127.0.0.1:55432/postgres --spans 1000000
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

QUERIES = {
    "count_by_service": "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name",
    "p99_by_operation": "SELECT service_name, name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 FROM spans WHERE kind = 'SERVER' GROUP BY 1, 2 ORDER BY 1, 2",
    "error_rate_per_minute": "SELECT date_bin(INTERVAL '1 minute', start_time) AS minute, count(*), avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) FROM spans GROUP BY 1 ORDER BY 1",
    "service_pairs": "SELECT p.service_name, c.service_name, count(*) FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id WHERE c.service_name <> p.service_name GROUP BY 1, 2 ORDER BY 1, 2",
    "trace_lookup": "SELECT * FROM spans WHERE trace_id = '{trace}'",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sql(api, query):
    request = urllib.request.Request(
        f"http://{api}/api/sql",
        data=json.dumps({"sql": query}).encode(),
        headers={"content-type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        body = json.load(response)
    return time.perf_counter() - started, body


def start(flowscope, data, env, extra):
    ports = [free_port() for _ in range(3)]
    command = [
        flowscope, "serve", "--data-dir", data,
        "--otlp-grpc-addr", f"127.0.0.1:{ports[0]}",
        "--otlp-http-addr", f"127.0.0.1:{ports[1]}",
        "--api-addr", f"127.0.0.1:{ports[2]}",
        "--flush-interval", "10s",
    ] + extra
    log = open(data + ".log", "w")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(data + ".log") as f:
            if "flowscope is ready" in f.read():
                return process, f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[2]}"
        if process.poll() is not None:
            sys.exit(f"flowscope exited: see {data}.log")
        time.sleep(0.1)
    sys.exit(f"flowscope did not start: see {data}.log")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--flowscope", required=True)
    parser.add_argument("--postgres", required=True, help="an admin URL: a database is created")
    parser.add_argument("--s3s-fs", default=shutil.which("s3s-fs") or "s3s-fs")
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="flowscope-cluster-bench-")
    processes = []
    try:
        s3_port = free_port()
        os.makedirs(f"{root}/s3/bench")
        processes.append(subprocess.Popen(
            [args.s3s_fs, "--host", "127.0.0.1", "--port", str(s3_port),
             "--access-key", "bench", "--secret-key", "benchsecret", f"{root}/s3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(os.environ, AWS_ENDPOINT=f"http://127.0.0.1:{s3_port}", AWS_ALLOW_HTTP="true",
                   AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="benchsecret", FLOWSCOPE_LOG="info", NO_COLOR="1")
        database = f"cluster_bench_{int(time.time())}"
        psql = os.path.join(subprocess.check_output(["pg_config", "--bindir"], text=True).strip(), "psql")
        subprocess.run([psql, args.postgres, "-qc", f"CREATE DATABASE {database}"], check=True)
        metadata = re.sub(r"/[^/]*$", f"/{database}", args.postgres)
        time.sleep(0.5)

        one, one_grpc, one_api = start(args.flowscope, f"{root}/one", env, ["--object-store", "s3://bench/one"])
        cluster = ["--metadata", metadata, "--object-store", "s3://bench/cluster"]
        a, _, _ = start(args.flowscope, f"{root}/a", env, cluster + ["--roles", "ingester"])
        b, _, _ = start(args.flowscope, f"{root}/b", env, cluster + ["--roles", "ingester"])
        r, r_grpc, r_api = start(args.flowscope, f"{root}/r", env, cluster + ["--roles", "receiver,querier"])
        processes += [one, a, b, r]
        deadline = time.time() + 30
        while True:
            _, cluster_info = None, json.load(urllib.request.urlopen(f"http://{r_api}/api/cluster"))
            if sum(n.get("partitions", 0) for n in cluster_info["nodes"]) == 64:
                break
            if time.time() > deadline:
                sys.exit("the ingesters did not take the partitions")
            time.sleep(0.2)
        time.sleep(1.5)

        seconds = max(1, args.spans // 50_000)
        for name, endpoint in [("one node", one_grpc), ("cluster", r_grpc)]:
            print(f"loading about {args.spans:,} spans into {name} ...", file=sys.stderr)
            subprocess.run([args.flowscope, "loadgen", "--endpoint", f"http://{endpoint}",
                            "--topology", "city", "--seed", "7", "--rate", "50000",
                            "--duration", f"{seconds}s", "--json"],
                           check=True, stdout=subprocess.DEVNULL)
        time.sleep(15)  # every node flushes (every 10 s)

        _, answer = sql(one_api, "SELECT trace_id FROM spans ORDER BY start_time DESC LIMIT 1")
        trace = answer["rows"][0][0]
        counts = {name: sql(api, "SELECT count(*) FROM spans")[1]["rows"][0][0]
                  for name, api in [("one", one_api), ("cluster", r_api)]}
        print(f"spans: one node {counts['one']:,}, cluster {counts['cluster']:,}")
        print(f"| query | one node (ms) | cluster (ms) | cluster / one |")
        print(f"|---|---|---|---|")
        for name, query in QUERIES.items():
            query = query.format(trace=trace)
            times = {"one": [], "cluster": []}
            for _ in range(args.runs):
                for side, api in [("one", one_api), ("cluster", r_api)]:
                    times[side].append(sql(api, query)[0])
            one_ms = statistics.median(times["one"]) * 1000
            cluster_ms = statistics.median(times["cluster"]) * 1000
            print(f"| {name} | {one_ms:.1f} | {cluster_ms:.1f} | {cluster_ms / one_ms:.2f} |")
        cpu = {name: cpu_seconds(p.pid) for name, p in [("one", one), ("a", a), ("b", b), ("r", r)]}
        print("server CPU-seconds, whole run: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
