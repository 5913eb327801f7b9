//! The dependency rules ARCHITECTURE.md states, checked with `cargo tree` so that a new
//! dependency that breaks them fails the build instead of eroding the design.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The names of every crate `package` depends on (normal edges only, all features).
fn dependencies(package: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

fn check_absent(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    // The package itself is the first line; `flowscope-base` has nothing after it.
    assert!(
        deps.first().is_some_and(|first| first == package),
        "cargo tree did not list {package}: {deps:?}"
    );
    for name in forbidden {
        assert!(
            !deps.iter().any(|d| d == name),
            "{package} must not depend on {name}"
        );
    }
}

/// Arrow as `cargo tree` names it: the facade and the crates any Arrow user pulls in.
const ARROW: [&str; 4] = ["arrow", "arrow-array", "arrow-schema", "arrow-buffer"];

#[test]
fn base_builds_no_arrow_runtime_or_server() {
    let mut forbidden = ARROW.to_vec();
    forbidden.extend(["parquet", "datafusion", "tokio", "tonic", "axum"]);
    check_absent("flowscope-base", &forbidden);
}

#[test]
fn model_is_arrow_only() {
    check_absent(
        "flowscope-model",
        &["tokio", "datafusion", "parquet", "tonic", "axum"],
    );
}

#[test]
fn graph_knows_nothing_of_tokio_io_or_http() {
    check_absent(
        "flowscope-graph",
        &[
            "tokio",
            "datafusion",
            "parquet",
            "tonic",
            "axum",
            "hyper",
            "flowscope-query",
            "flowscope-collector",
        ],
    );
}

#[test]
fn auth_is_plain_logic() {
    check_absent(
        "flowscope-auth",
        &[
            "tokio",
            "datafusion",
            "tonic",
            "axum",
            "hyper",
            "flowscope-query",
            "flowscope-collector",
            "flowscope-web",
        ],
    );
    check_absent("flowscope-auth", &ARROW);
}

#[test]
fn the_demo_is_only_an_otlp_client() {
    check_absent(
        "flowscope-demo",
        &[
            "datafusion",
            "parquet",
            "flowscope-query",
            "flowscope-graph",
            "flowscope-collector",
        ],
    );
    check_absent("flowscope-demo", &ARROW);
}

#[test]
fn otlp_stays_in_the_collector_and_sql_in_query() {
    check_absent(
        "flowscope-collector",
        &["datafusion", "parquet", "flowscope-query"],
    );
    check_absent(
        "flowscope-query",
        &[
            "tonic",
            "axum",
            "opentelemetry-proto",
            "flowscope-collector",
        ],
    );
    check_absent("flowscope-web", &["tonic", "opentelemetry-proto"]);
    check_absent(
        "flowscope-alert",
        &[
            "axum",
            "tonic",
            "opentelemetry-proto",
            "flowscope-collector",
            "flowscope-web",
        ],
    );
}

/// The `.rs` files under `dir`, recursively, as paths relative to the workspace root.
fn rust_files(dir: &str) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut pending = vec![root.join(dir)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under the root");
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// A file's code without its unit tests: everything before its first `#[cfg(test)]`.
fn code_without_tests(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(path)).expect("read a source file");
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Only the pipeline module starts the server's threads and long-lived tasks, so that the
/// list of stages in `src/pipeline/mod.rs` is the whole list and a role is a subset of it.
/// Work for one request (`spawn_blocking`, a query's task on the SQL runtime, a
/// connection's task in the accept layer, a rule's evaluation in the scheduler) is not a
/// stage.
#[test]
fn only_the_pipeline_starts_the_servers_threads_and_tasks() {
    const STARTS: [&str; 3] = ["thread::Builder", "thread::spawn(", "tokio::spawn("];
    // Not the server: the load generator is a client command of the same binary.
    const ALLOWED: [&str; 6] = [
        "src/loadgen.rs",
        // The write of one forwarded part, which must outlive a receiver dropping the call:
        // work for one request, bounded by the store's write.
        "collector/src/accept.rs",
        // A receiver's sender of batched parts to one ingester: started by a request when
        // none runs for that ingester, it ends when no part waits (at most one per ingester).
        "collector/src/route.rs",
        // A connection's task, the child of its port's accept loop.
        "src/listen.rs",
        // `SpanStore::open`, a store outside the server (tests, tools); the server takes
        // the stages from `Recovered::stages` and starts them in the pipeline (below).
        "query/src/store/mod.rs",
        // The background fill of one read that missed the object storage cache: work for
        // one request, bounded (one GET, one file write).
        "query/src/store/cache.rs",
    ];
    let crates = [
        "src",
        "base/src",
        "model/src",
        "auth/src",
        "collector/src",
        "graph/src",
        "query/src",
        "alert/src",
        "web/src",
    ];
    let mut starts = Vec::new();
    for dir in crates {
        for file in rust_files(dir) {
            if file.starts_with("src/pipeline/")
                || ALLOWED.contains(&file.as_str())
                || file.ends_with("test_support.rs")
                || file.ends_with("_tests.rs")
                || file.ends_with("fuzzing.rs")
            {
                continue;
            }
            let code = code_without_tests(&file);
            for (n, line) in code.lines().enumerate() {
                if STARTS.iter().any(|start| line.contains(start)) {
                    starts.push(format!("{file}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        starts.is_empty(),
        "threads or tasks started outside src/pipeline/: {starts:#?}"
    );
    for file in rust_files("src") {
        assert!(
            !code_without_tests(&file).contains("SpanStore::open("),
            "{file}: the server opens its stores through the pipeline, which starts their stages"
        );
    }
}

/// The graph is a stage downstream of the store: the store (`query/src/store/`) knows
/// nothing of the graph or of SQL, and the graph's code (`query/src/graph/`) reads the store
/// only through its API (`SpanStore`, `View`, `Recovered`, `store::read`), never through its
/// WAL or segment files.
#[test]
fn the_store_knows_nothing_of_the_graph_and_the_graph_only_its_api() {
    let mut breaches = Vec::new();
    for file in rust_files("query/src/store") {
        let code = code_without_tests(&file);
        for forbidden in ["crate::graph", "crate::sql", "flowscope_graph"] {
            if code.contains(forbidden) {
                breaches.push(format!("{file} uses {forbidden}"));
            }
        }
    }
    for file in rust_files("query/src/graph") {
        let code = code_without_tests(&file);
        for forbidden in ["store::wal", "store::segment"] {
            if code.contains(forbidden) {
                breaches.push(format!("{file} uses {forbidden}"));
            }
        }
    }
    assert!(breaches.is_empty(), "{breaches:#?}");
}

/// The receive path is one way: the transports (`grpc.rs`, `http.rs`) call the accept step,
/// which calls the decoders, and `decode.rs` calls `wire.rs`, which calls `spans.rs`; no
/// module reaches back to one before it (their unit tests may, to compare paths).
#[test]
fn the_receive_path_calls_one_way() {
    let order = ["accept", "decode", "wire", "spans"];
    for (at, module) in order.iter().enumerate() {
        let code = code_without_tests(&format!("collector/src/{module}.rs"));
        let before = order[..at].iter().chain(&["grpc", "http"]);
        for earlier in before {
            for path in [format!("crate::{earlier}"), format!("super::{earlier}")] {
                assert!(
                    !code.contains(&path),
                    "collector/src/{module}.rs reaches back to {path}"
                );
            }
        }
    }
}

/// The distributed query engine's API changes between major versions: one crate depends on
/// it (`flowscope-cluster`), and one file there names it (`cluster/src/sql.rs`).
#[test]
fn the_distributed_engine_stays_behind_one_module() {
    for package in [
        "flowscope-query",
        "flowscope-web",
        "flowscope-alert",
        "flowscope-collector",
    ] {
        check_absent(package, &["datafusion-distributed"]);
    }
    let mut naming = Vec::new();
    for dir in ["src", "cluster/src", "query/src", "web/src"] {
        for file in rust_files(dir) {
            if code_without_tests(&file).contains("datafusion_distributed") {
                naming.push(file);
            }
        }
    }
    assert_eq!(
        naming,
        ["cluster/src/sql.rs"],
        "files that name datafusion_distributed"
    );
}
