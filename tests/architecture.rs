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
    assert!(deps.len() > 1, "cargo tree listed nothing for {package}");
    for name in forbidden {
        assert!(
            !deps.iter().any(|d| d == name),
            "{package} must not depend on {name}"
        );
    }
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
