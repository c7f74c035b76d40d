//! The auth matrix, driven by the spec: for every operation, no key → 401,
//! a role the spec does not list → 403, a listed role → neither.

use anyhow::{ensure, Result};
use axum::http::Method;
use grin_api::auth::AccessTable;
use grin_store::Role;
use serde_json::json;

use crate::common::{TestApp, TestDb};

backend_tests!(auth_matrix_over_every_route, submitters_see_only_their_own);

/// A concrete URI for a path template.
pub fn concrete(path: &str) -> String {
    path.replace("{id}", "0190a000-0000-7000-8000-000000000000")
        .replace("{name}", "m")
        .replace("{number}", "1")
        .replace("{alias}", "staging")
}

async fn auth_matrix_over_every_route(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let table = AccessTable::from_openapi(&grin_api::openapi());
    let mut checked = 0;
    for (method, path, roles) in table.operations() {
        let Some(roles) = roles else { continue };
        let uri = concrete(path);
        let body = (*method != Method::GET).then(|| json!({}));
        let r = t.call(method.clone(), &uri, None, body.clone()).await?;
        r.expect_problem(401)?;
        ensure!(r.headers.contains_key("www-authenticate"));
        let r = t.call(method.clone(), &uri, Some("not-a-key"), body.clone()).await?;
        r.expect_problem(401)?;
        for role in Role::ALL {
            let r = t.call(method.clone(), &uri, Some(t.key(*role)), body.clone()).await?;
            if roles.contains(role) {
                ensure!(
                    r.status != 401 && r.status != 403,
                    "{method} {uri} as {role}: {}",
                    r.status
                );
            } else {
                r.expect_problem(403)?;
            }
            checked += 1;
        }
    }
    ensure!(checked >= 54, "{checked} checks");
    // Revoked keys are refused.
    let key = t
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .find(|k| k.role == Role::Reader)
        .unwrap();
    t.store.revoke_api_key(key.id, "test").await?;
    t.call(Method::GET, "/v1/jobs", Some(&t.reader), None)
        .await?
        .expect_problem(401)?;
    Ok(())
}

async fn submitters_see_only_their_own(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let id = t.submit("mine").await?;
    let uri = format!("/v1/deletion-requests/{id}");
    ensure!(t.get(&uri, &t.submitter).await?.status == 200);
    t.get(&uri, &t.submitter2).await?.expect_problem(404)?;
    t.call(Method::POST, &format!("{uri}/cancel"), Some(&t.submitter2), None)
        .await?
        .expect_problem(404)?;
    ensure!(t.get(&uri, &t.reader).await?.status == 200);
    let list = t.get("/v1/deletion-requests", &t.submitter2).await?;
    ensure!(list.body["items"].as_array().unwrap().is_empty(), "{list:?}");
    let list = t.get("/v1/deletion-requests", &t.reader).await?;
    ensure!(list.body["items"].as_array().unwrap().len() == 1);
    Ok(())
}
