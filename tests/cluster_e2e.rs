//! A cluster on loopback (issue 24): a PostgreSQL of the test's own, s3s-fs, two ingesters
//! and a receiver, each a real `flowscope serve --roles …` process. Spans sent to the
//! receiver (OTLP/gRPC, OTLP/HTTP protobuf and JSON) land on the ingester that holds their
//! trace's partition, every span of a trace on one ingester; an ingester killed with
//! SIGKILL loses its partitions when its leases end, the other takes them and ingest goes
//! on; back, it has every span it acknowledged. With two queriers, the files are read by
//! the queriers, a share each, and each ingester's memory on that ingester.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::Server;
use common::cluster::{
    cluster, export_with_retry, held, node_id, post, send, start, start_with_env, traces, wait_for,
    wait_for_split,
};
use common::otlp::numbered_request;
use common::postgres::Postgres;
use common::s3::{Kind, S3};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

#[test]
fn receivers_route_traces_to_their_ingester_and_partitions_move_when_one_dies() {
    let mut pg = Postgres::start();
    let metadata = pg.database("cluster");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let a = start(&dir.path().join("a"), &s3, &metadata, "ingester");
    let b = start(&dir.path().join("b"), &s3, &metadata, "ingester,compactor");
    let receiver = start(&dir.path().join("r"), &s3, &metadata, "receiver,querier");
    let (a_id, b_id) = (node_id(&a), node_id(&b));
    wait_for_split(&receiver, &a, &b);
    // An ingester's graph buckets, on its gRPC port (which clients reach), answer only the
    // cluster's nodes: a request without the cluster's secret, or with another, is refused.
    for secret in [None, Some("not-the-secret")] {
        assert_eq!(graph_buckets_status(&a, secret), 401, "secret {secret:?}");
    }
    let nodes = cluster(&receiver);
    let roles: BTreeSet<String> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(
        roles,
        ["ingester", "ingester,compactor", "receiver,querier"]
            .map(String::from)
            .into(),
    );

    // 4,000 spans of 500 traces over gRPC, then 400 more over HTTP (protobuf, then JSON).
    send(&receiver, "orders", 0, 4_000);
    post(
        &receiver,
        "application/x-protobuf",
        numbered_request("orders", 4_000, 200).encode_to_vec(),
    );
    let json: ExportTraceServiceRequest = numbered_request("orders", 4_200, 200);
    post(
        &receiver,
        "application/json",
        serde_json::to_vec(&json).unwrap(),
    );

    let (on_a, on_b) = (traces(&a), traces(&b));
    let spans = |t: &BTreeMap<String, i64>| t.values().sum::<i64>();
    assert_eq!(
        spans(&on_a) + spans(&on_b),
        4_400,
        "every span on one ingester"
    );
    assert!(
        spans(&on_a) > 1_000 && spans(&on_b) > 1_000,
        "both take a share: {} / {}",
        spans(&on_a),
        spans(&on_b)
    );
    assert!(
        on_a.keys().all(|trace| !on_b.contains_key(trace)),
        "no trace is split between ingesters"
    );
    assert!(
        on_a.values().chain(on_b.values()).all(|&n| n == 8),
        "every trace whole on its ingester"
    );
    // The receiver is a querier too: its `spans` is every ingester's, each span once,
    // from their memory now and from their files after a flush.
    assert_eq!(receiver.count("SELECT count(*) FROM spans"), 4_400);
    let mut whole = on_a.clone();
    whole.extend(on_b.clone());
    assert_eq!(
        traces(&receiver),
        whole,
        "the querier sees every trace whole, once"
    );
    // EXPLAIN shows the distributed plan: a stage of two tasks, each reading one ingester's
    // memory on that ingester (and a share of the files).
    let explain = receiver.sql("EXPLAIN SELECT service_name, count(*) FROM spans GROUP BY 1");
    let explain = explain["rows"][1][1].as_str().unwrap().to_string();
    assert!(
        explain.contains("DistributedExec")
            && explain.contains("tasks=2")
            && explain.contains(&format!(
                "t0: IngesterScanExec: tenant=default, ingesters=[{}",
                a_id.clone().min(b_id.clone())
            ))
            && explain.contains(&format!(
                "t1: IngesterScanExec: tenant=default, ingesters=[{}",
                a_id.clone().max(b_id.clone())
            )),
        "the plan reads each ingester in a task of its own: {explain}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        receiver.count("SELECT count(*) FROM spans"),
        4_400,
        "across a flush"
    );
    assert_eq!(traces(&receiver), whole);

    // b dies without a word: its partitions move to a when their leases end (15 s), and
    // the receiver goes on routing, to a alone.
    let b_dir = b.data_dir.clone();
    let b_had = spans(&on_b);
    b.kill();
    let killed = Instant::now();
    wait_for("a to take b's partitions", Duration::from_secs(40), || {
        held(&receiver).get(&a_id) == Some(&64)
    });
    let moved_after = killed.elapsed();
    assert!(
        moved_after < Duration::from_secs(35),
        "partitions moved {moved_after:?} after the kill"
    );
    // The querier still answers, from b's files in the bucket; what b held unflushed is
    // unavailable until it returns, and /api/cluster says how much.
    let b_row = cluster(&receiver)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == b_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(b_row["state"], "stale", "{b_row}");
    let unavailable = b_row["unavailable_spans"].as_i64().unwrap();
    assert_eq!(
        receiver.count("SELECT count(*) FROM spans WHERE service_name = 'orders'"),
        4_400 - unavailable,
        "every span but what b had not flushed"
    );
    send(&receiver, "payments", 10_000, 800);
    assert_eq!(
        a.count("SELECT count(*) FROM spans WHERE service_name = 'payments'"),
        800,
        "a takes every trace while b is away"
    );

    // b comes back on its data directory: every span it acknowledged is there (replayed
    // from its WAL or read from its files), and the partitions split again.
    let b = start(&b_dir, &s3, &metadata, "ingester,compactor");
    assert_eq!(
        b.count("SELECT count(*) FROM spans"),
        b_had,
        "b lost nothing it acknowledged"
    );
    wait_for_split(&receiver, &a, &b);
    send(&receiver, "billing", 20_000, 800);
    let billing = |s: &Server| s.count("SELECT count(*) FROM spans WHERE service_name = 'billing'");
    assert_eq!(billing(&a) + billing(&b), 800);
    assert!(billing(&b) > 0, "b takes traces again");

    // A clean stop gives the partitions back at once.
    let stopped = Instant::now();
    b.stop();
    wait_for(
        "a to take b's partitions after a clean stop",
        Duration::from_secs(10),
        || held(&receiver).get(&a_id) == Some(&64),
    );
    assert!(stopped.elapsed() < Duration::from_secs(10));
    receiver.stop();
    a.stop();
    pg.stop();
}

/// The HTTP status of a graph-buckets request to `node`'s gRPC port carrying `secret`.
fn graph_buckets_status(node: &Server, secret: Option<&str>) -> u16 {
    use tower::ServiceExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(node.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut request = http::Request::post(format!(
            "{}/flowscope.cluster.v1.Graph/Buckets",
            node.grpc_url()
        ))
        .header("content-type", "application/json");
        if let Some(secret) = secret {
            request = request.header("x-flowscope-cluster-secret", secret);
        }
        let request = request.body(tonic::body::Body::empty()).unwrap();
        channel.oneshot(request).await.unwrap().status().as_u16()
    })
}

/// A receiver sends the parts of concurrent requests to one ingester together. When the
/// ingester would refuse a span of such a call, it stores nothing and the receiver sends
/// the parts one by one: each client learns exactly its own partial success, and every
/// valid span is stored once.
#[test]
fn concurrent_requests_batched_to_an_ingester_each_get_their_own_answer() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let mut pg = Postgres::start();
    let metadata = pg.database("batches");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let a = start(&dir.path().join("a"), &s3, &metadata, "ingester");
    let receiver = start(&dir.path().join("r"), &s3, &metadata, "receiver,querier");
    wait_for("a to hold every partition", Duration::from_secs(30), || {
        held(&receiver).get(&node_id(&a)) == Some(&64)
    });
    let one_by_one = |server: &Server| -> f64 {
        server
            .metrics_text()
            .lines()
            .filter(|line| {
                line.starts_with("flowscope_ingest_requests_total{")
                    && line.contains("outcome=\"one_by_one\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = receiver.grpc_url();
    let mut sent = 0u64;
    let mut bursts = 0;
    while one_by_one(&a) == 0.0 {
        bursts += 1;
        assert!(
            bursts <= 5,
            "no call carried several requests' parts in 5 bursts"
        );
        // 24 requests at once; the 6th has a span without a span id, which is refused.
        let answers = runtime.block_on(futures::future::join_all((0..24u64).map(|i| {
            let url = url.clone();
            let first = 100_000 * bursts + i * 80;
            async move {
                let mut request = numbered_request("batched", first, 80);
                if i == 5 {
                    request.resource_spans[0].scope_spans[0].spans[3].span_id = Vec::new();
                }
                let mut client = TraceServiceClient::connect(url).await.unwrap();
                client.export(request).await.unwrap().into_inner()
            }
        })));
        for (i, answer) in answers.iter().enumerate() {
            let rejected = answer
                .partial_success
                .as_ref()
                .map_or(0, |p| p.rejected_spans);
            assert_eq!(rejected, i64::from(i == 5), "request {i}: {answer:?}");
        }
        sent += 24 * 80 - 1;
    }
    assert_eq!(
        receiver.count("SELECT count(*) FROM spans WHERE service_name = 'batched'"),
        sent as i64,
        "every valid span stored once"
    );
    receiver.stop();
    a.stop();
    pg.stop();
}

/// One ingester and a separate querier: the querier reads the ingester's memory before the
/// ingester has written any file (the planner must send the scan to the ingester even when
/// it is the plan's only leaf and holds one partition).
#[test]
fn a_querier_reads_a_lone_ingesters_memory_before_its_first_flush() {
    let mut pg = Postgres::start();
    let metadata = pg.database("lone");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let a = start_with_env(
        &dir.path().join("a"),
        &s3,
        &metadata,
        "ingester",
        &[("FLOWSCOPE_TEST_FLUSH_INTERVAL", "10m")],
    );
    let querier = start(&dir.path().join("q"), &s3, &metadata, "receiver,querier");
    wait_for("a to hold every partition", Duration::from_secs(30), || {
        held(&querier).get(&node_id(&a)) == Some(&64)
    });
    export_with_retry(&querier, vec![numbered_request("lone", 0, 300)]);
    for sql in [
        "SELECT count(*) FROM spans",
        "SELECT count(*) FROM spans WHERE service_name = 'lone'",
        "SELECT count(DISTINCT span_id) FROM spans",
    ] {
        assert_eq!(querier.count(sql), 300, "{sql}");
    }
    let rows = querier.sql("SELECT span_id FROM spans ORDER BY span_id LIMIT 5");
    assert_eq!(rows["rows"].as_array().unwrap().len(), 5, "{rows}");
    let grouped = querier.sql("SELECT service_name, count(*) FROM spans GROUP BY 1");
    assert_eq!(grouped["rows"][0][1], 300, "{grouped}");
    querier.stop();
    a.stop();
    pg.stop();
}

/// The sum of a node's metrics whose lines start with any of `names` (all labels).
fn metric_sum(node: &Server, names: &[&str]) -> u64 {
    node.metrics_text()
        .lines()
        .filter(|line| names.iter().any(|name| line.starts_with(name)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Reads of Parquet a node made (answered by its disk cache or by the bucket).
fn parquet_reads(node: &Server) -> u64 {
    metric_sum(
        node,
        &["flowscope_cache_hits_total", "flowscope_cache_misses_total"],
    )
}

/// Spans an ingester has in committed files.
fn spans_in_files(node: &Server) -> u64 {
    metric_sum(node, &["flowscope_store_spans_in_segments"])
}

#[test]
fn the_files_are_read_by_the_queriers_each_file_once_and_the_memory_on_its_ingester() {
    let mut pg = Postgres::start();
    let metadata = pg.database("queriers");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let a = start(&dir.path().join("a"), &s3, &metadata, "ingester");
    let b = start(&dir.path().join("b"), &s3, &metadata, "ingester");
    let q1 = start(&dir.path().join("q1"), &s3, &metadata, "receiver,querier");
    let q2 = start(&dir.path().join("q2"), &s3, &metadata, "querier");
    wait_for_split(&q1, &a, &b);
    send(&q1, "files", 0, 4_000);
    wait_for(
        "both ingesters to flush every span to the bucket",
        Duration::from_secs(30),
        || {
            let (on_a, on_b) = (spans_in_files(&a), spans_in_files(&b));
            on_a > 0 && on_b > 0 && on_a + on_b == 4_000
        },
    );
    // The files' share of the stage reading spans runs as a task on each querier (q1 has
    // seen q2 join: its directory is refreshed every second).
    let explain = || {
        let answer = q1.sql("EXPLAIN SELECT count(DISTINCT span_id) FROM spans");
        answer["rows"][1][1].as_str().unwrap().to_string()
    };
    wait_for(
        "q1 to plan with both queriers",
        Duration::from_secs(15),
        || explain().contains("c0(1/2)"),
    );
    let plan = explain();
    assert!(
        plan.contains("DistributedUnionExec") && plan.contains("IngesterScanExec"),
        "{plan}"
    );

    let nodes = [&a, &b, &q1, &q2];
    let before: Vec<u64> = nodes.iter().map(|n| parquet_reads(n)).collect();
    for querier in [&q1, &q2] {
        assert_eq!(
            querier.count("SELECT count(DISTINCT span_id) FROM spans"),
            4_000
        );
        assert_eq!(querier.count("SELECT count(*) FROM spans"), 4_000);
    }
    let after: Vec<u64> = nodes.iter().map(|n| parquet_reads(n)).collect();
    assert_eq!(
        (after[0], after[1]),
        (before[0], before[1]),
        "the ingesters read no file: {before:?} → {after:?}\n{plan}"
    );
    assert!(
        after[2] > before[2] && after[3] > before[3],
        "each querier read a share of the files: {before:?} → {after:?}\n{plan}"
    );

    // Spans that arrive after the flush are read from the ingesters' memory, with the files.
    send(&q1, "memory", 10_000, 800);
    assert_eq!(q2.count("SELECT count(*) FROM spans"), 4_800);
    assert_eq!(
        q2.count("SELECT count(*) FROM spans WHERE service_name = 'memory'"),
        800
    );
    for node in [q2, q1, b, a] {
        node.stop();
    }
    pg.stop();
}

/// Parquet files an ingester's store lists (all tenants).
fn files_of(node: &Server) -> u64 {
    metric_sum(node, &["flowscope_store_segments"])
}

/// `count` numbered spans of `service` from `first`, moved to the middle of the hour
/// two hours ago: an hour long ended, whose small files are merged.
fn two_hours_ago(service: &str, first: u64, count: u64) -> Vec<ExportTraceServiceRequest> {
    const HOUR: u64 = 3_600_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let middle = (now / HOUR - 2) * HOUR + HOUR / 2;
    let base = common::otlp::base_time_ns();
    (first..first + count)
        .step_by(200)
        .map(|at| {
            let mut request = numbered_request(service, at, 200.min(first + count - at));
            for span in request
                .resource_spans
                .iter_mut()
                .flat_map(|r| r.scope_spans.iter_mut())
                .flat_map(|s| s.spans.iter_mut())
            {
                span.start_time_unix_nano = middle + (span.start_time_unix_nano - base);
                span.end_time_unix_nano = middle + (span.end_time_unix_nano - base);
            }
            request
        })
        .collect()
}

#[test]
fn the_compactor_merges_every_ingesters_small_files_and_the_ingesters_merge_none() {
    let mut pg = Postgres::start();
    let metadata = pg.database("compactor");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let fast = [
        ("FLOWSCOPE_TEST_FLUSH_INTERVAL", "1s"),
        ("FLOWSCOPE_COMPACT_INTERVAL", "1s"),
    ];
    let a = start_with_env(&dir.path().join("a"), &s3, &metadata, "ingester", &fast);
    let b = start_with_env(&dir.path().join("b"), &s3, &metadata, "ingester", &fast);
    let q = start_with_env(
        &dir.path().join("q"),
        &s3,
        &metadata,
        "receiver,querier",
        &fast,
    );
    wait_for_split(&q, &a, &b);
    // Five flushes on each ingester, of spans of an hour long ended.
    let mut sent = 0;
    for round in 0..5 {
        let before = (spans_in_files(&a), spans_in_files(&b));
        export_with_retry(&q, two_hours_ago("late", round * 1_000, 1_000));
        sent += 1_000;
        wait_for("both ingesters to flush", Duration::from_secs(20), || {
            let (on_a, on_b) = (spans_in_files(&a), spans_in_files(&b));
            on_a > before.0 && on_b > before.1 && on_a + on_b == sent
        });
    }
    let (files_a, files_b) = (files_of(&a), files_of(&b));
    assert!(files_a >= 5 && files_b >= 5, "{files_a} / {files_b}");
    // No node has the compactor role: with a compaction interval of 1 s, nothing merges.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((files_of(&a), files_of(&b)), (files_a, files_b));

    // A compactor joins: each ingester's files of that hour become one, swapped in its
    // catalog rows; each ingester takes the swap in, and nothing is lost or doubled.
    let c = start_with_env(&dir.path().join("c"), &s3, &metadata, "compactor", &fast);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(files_of(&a) == 1 && files_of(&b) == 1) {
        assert!(
            Instant::now() < deadline,
            "the compactor did not merge both ingesters' files ({} / {}); its log:\n{}",
            files_of(&a),
            files_of(&b),
            c.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(q.count("SELECT count(*) FROM spans"), 5_000);
    assert_eq!(q.count("SELECT count(DISTINCT span_id) FROM spans"), 5_000);
    assert_eq!(
        a.count("SELECT count(*) FROM spans") + b.count("SELECT count(*) FROM spans"),
        5_000,
        "each ingester reads its merged file"
    );
    // The old files stay in the bucket for the grace period (queries that started before
    // the swap may read them); the merged one is under the owner's prefix.
    let mut keys = s3.keys("cluster/nodes/");
    keys.retain(|k| k.ends_with(".parquet"));
    let merged: Vec<&String> = keys.iter().filter(|k| k.contains("-c0")).collect();
    assert_eq!(merged.len(), 2, "{keys:?}");
    for id in [node_id(&a), node_id(&b)] {
        assert!(
            merged.iter().any(|k| k.contains(&format!("nodes/{id}/"))),
            "{id}: {keys:?}"
        );
    }
    // Restarted, an ingester opens on the catalog's files: the merged one.
    let a_dir = a.data_dir.clone();
    a.stop();
    // Asked at once, before the querier's next look at the membership: a node that does not
    // answer is a retryable 503 that says so, never the query's fault (400).
    let (status, body) = q.sql_status("SELECT count(*) FROM spans");
    assert!(
        status == 200 || (status == 503 && body.to_string().contains("did not answer")),
        "{status}: {body}"
    );
    let a = start_with_env(&a_dir, &s3, &metadata, "ingester", &fast);
    assert_eq!(files_of(&a), 1);
    wait_for_split(&q, &a, &b);
    // (The querier learns a's new address with its next look at the membership, each
    // second.)
    wait_for("q to reach a again", Duration::from_secs(10), || {
        q.sql_status("SELECT count(*) FROM spans").0 == 200
    });
    assert_eq!(q.count("SELECT count(*) FROM spans"), 5_000);
    for node in [c, q, b, a] {
        node.stop();
    }
    pg.stop();
}
