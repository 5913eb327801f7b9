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
