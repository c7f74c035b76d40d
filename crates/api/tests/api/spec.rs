//! openapi.yaml is generated from the code: the checked-in file must equal
//! the generated one (`GRIN_UPDATE_OPENAPI=1` rewrites it), and every
//! operation the router serves is in it.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use axum::http::Method;
use grin_api::auth::AccessTable;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml")
}

#[test]
fn openapi_yaml_is_generated_from_the_code() -> Result<()> {
    let generated = grin_api::openapi().to_yaml()?;
    let path = spec_path();
    if std::env::var("GRIN_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated)?;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    ensure!(
        checked_in == generated,
        "openapi.yaml is stale: run `GRIN_UPDATE_OPENAPI=1 cargo test -p grin-api openapi` and commit it"
    );
    ensure!(generated.starts_with("openapi: 3.1"), "not OpenAPI 3.1");
    Ok(())
}

/// Every operation in the spec is served (not 404/405 before auth) and every
/// authenticated one is guarded; requests to paths outside the spec are 404.
#[tokio::test]
async fn every_spec_operation_is_routed_and_nothing_else() -> Result<()> {
    let doc = grin_api::openapi();
    let table = AccessTable::from_openapi(&doc);
    let ops: Vec<_> = table.operations().collect();
    ensure!(ops.len() >= 20, "only {} operations", ops.len());
    let store = grin_store::Store::open("sqlite::memory:", grin_store::StoreOptions::new(b"s".to_vec())).await?;
    let router = grin_api::app(grin_api::AppState::new(store));
    for (method, path, roles) in ops {
        let uri = crate::api::auth::concrete(path);
        let req = axum::http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(axum::body::Body::empty())?;
        let status = tower::ServiceExt::oneshot(router.clone(), req).await?.status();
        match roles {
            Some(_) => ensure!(status == 401, "{method} {uri}: {status} without a key"),
            None => ensure!(status != 404 && status != 405, "{method} {uri}: {status}"),
        }
        // A method the spec does not list for this path is 405.
        if doc.paths.paths[path].delete.is_none() {
            let req = axum::http::Request::builder()
                .method(Method::DELETE)
                .uri(&uri)
                .body(axum::body::Body::empty())?;
            let status = tower::ServiceExt::oneshot(router.clone(), req).await?.status();
            ensure!(status == 405, "DELETE {uri}: {status}");
        }
    }
    Ok(())
}
