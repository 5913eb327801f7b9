//! The dashboard: static files under `web/assets/`, embedded in the binary at compile time
//! and served at `/` and `/assets/...` with their content types.
//!
//! There is no front-end build step: the files are plain JavaScript modules, CSS and the
//! vendored libraries, served as they are in the repository.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Embeds one file of `web/assets/` under its path relative to that directory.
macro_rules! asset {
    ($path:literal) => {
        (
            $path,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)) as &[u8],
        )
    };
}

/// Every file of `web/assets/`; a test checks that none is missing from this list.
const ASSETS: &[(&str, &[u8])] = &[
    asset!("index.html"),
    asset!("app.css"),
    asset!("examples.sql"),
    asset!("js/alerts.js"),
    asset!("js/api.js"),
    asset!("js/chart.js"),
    asset!("js/critical.js"),
    asset!("js/dom.js"),
    asset!("js/graph.js"),
    asset!("js/incidents.js"),
    asset!("js/layout.js"),
    asset!("js/early.js"),
    asset!("js/main.js"),
    asset!("js/panel.js"),
    asset!("js/reach.js"),
    asset!("js/search.js"),
    asset!("js/sql.js"),
    asset!("js/trace.js"),
    asset!("vendor/README.md"),
    asset!("vendor/cytoscape/LICENSE"),
    asset!("vendor/cytoscape/cytoscape.esm.min.mjs"),
    asset!("vendor/cytoscape-dagre/LICENSE"),
    asset!("vendor/cytoscape-dagre/cytoscape-dagre.min.mjs"),
    asset!("vendor/uplot/LICENSE"),
    asset!("vendor/uplot/uPlot.esm.js"),
    asset!("vendor/uplot/uPlot.min.css"),
];

/// Scripts only from our own origin: even if span-derived text reached markup by mistake, an
/// inline handler such as `onerror=...` would not run. Styles may be inline because the graph
/// and chart libraries set element styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Routes for the dashboard; they need no state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the dashboard\n",
        )
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            // Assets change with the binary, not with time: revalidate rather than guess.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        *body,
    )
        .into_response()
}

/// The content type of an asset, from its extension.
fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_under_assets_is_embedded() {
        let mut on_disk = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        files_under(&root, "", &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "web/src/assets.rs must list every asset");
    }

    #[test]
    fn the_sql_consoles_examples_are_the_readmes() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .unwrap();
        let examples =
            std::str::from_utf8(ASSETS.iter().find(|(p, _)| *p == "examples.sql").unwrap().1)
                .unwrap();
        let blocks: Vec<&str> = examples.split("\n\n").map(str::trim).collect();
        assert!(blocks.len() >= 5, "{blocks:?}");
        for block in blocks {
            assert!(
                readme.contains(block),
                "web/assets/examples.sql has a query README.md does not:\n{block}"
            );
        }
    }

    async fn get(path: &str) -> (StatusCode, String, Vec<u8>) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, body.to_vec())
    }

    #[tokio::test]
    async fn the_dashboard_is_served_with_its_content_types() {
        let check = |path: &'static str, expected: &'static str| async move {
            let (status, content_type, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, expected, "{path}");
            assert!(!body.is_empty(), "{path}");
        };
        check("/", "text/html; charset=utf-8").await;
        check("/assets/app.css", "text/css; charset=utf-8").await;
        check("/assets/js/main.js", "text/javascript; charset=utf-8").await;
        check(
            "/assets/vendor/cytoscape/cytoscape.esm.min.mjs",
            "text/javascript; charset=utf-8",
        )
        .await;
        let (status, _, _) = get("/assets/js/missing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get("/assets/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
