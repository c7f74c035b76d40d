//! API-key authentication and role checks.
//!
//! Clients send `Authorization: Bearer <secret>`; the store keeps only the
//! secret's SHA-256 ([`grin_store::Store::authenticate`]). Which roles may
//! call an operation is declared once, in the operation's OpenAPI security
//! requirement (`security(("bearer" = ["reader", "admin"]))`: the scopes
//! are the roles allowed), and [`AccessTable`] reads it from the generated
//! document, so the spec is the access policy. Operations without a security
//! requirement are public. Submitters additionally see only their own
//! deletion requests (checked in the handlers).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use grin_store::Role;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller of an operation.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The client id deletion requests are stored under.
    pub fn client_id(&self) -> String {
        self.key_id.to_string()
    }

    /// The actor name written to the audit log.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }

    /// Sees every deletion request, not only its own.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Role::Reader | Role::Admin)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("this operation needs an API key"))
    }
}

/// Roles allowed per `(method, path template)`; `None` = public.
#[derive(Debug, Clone, Default)]
pub struct AccessTable {
    ops: HashMap<(Method, String), Option<Vec<Role>>>,
}

impl AccessTable {
    /// Reads every operation's security requirement from the OpenAPI document.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Self {
        let value = serde_json::to_value(doc).expect("an OpenAPI document serializes");
        let mut ops = HashMap::new();
        if let Some(paths) = value["paths"].as_object() {
            for (path, item) in paths {
                let Some(item) = item.as_object() else { continue };
                for (method, op) in item {
                    let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                        continue;
                    };
                    ops.insert((method, path.clone()), roles_of(op));
                }
            }
        }
        AccessTable { ops }
    }

    /// The roles allowed for an operation: `Some(None)` public,
    /// `Some(Some(roles))` restricted, `None` unknown operation.
    pub fn roles(&self, method: &Method, path: &str) -> Option<Option<&[Role]>> {
        self.ops.get(&(method.clone(), path.to_owned())).map(|r| r.as_deref())
    }

    /// Every operation, for tests and docs.
    pub fn operations(&self) -> impl Iterator<Item = (&Method, &str, Option<&[Role]>)> {
        self.ops.iter().map(|((m, p), r)| (m, p.as_str(), r.as_deref()))
    }
}

/// The roles named by an operation's `bearer` security requirement.
pub fn roles_of(op: &serde_json::Value) -> Option<Vec<Role>> {
    let reqs = op.get("security")?.as_array()?;
    let mut roles = Vec::new();
    for req in reqs {
        if let Some(scopes) = req.get("bearer").and_then(|s| s.as_array()) {
            roles.extend(scopes.iter().filter_map(|s| s.as_str()?.parse::<Role>().ok()));
        }
    }
    Some(roles)
}

/// Middleware (a route layer): authenticates and checks the role the spec
/// requires for the matched route.
pub async fn require_role(
    State((state, table)): State<(AppState, Arc<AccessTable>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let allowed = match table.roles(req.method(), &path) {
        // Public, or a method the route does not have (405 follows).
        None | Some(None) => return next.run(req).await,
        Some(Some(roles)) => roles.to_vec(),
    };
    let Some(secret) = bearer(req.headers()) else {
        return ApiError::unauthorized("missing or malformed `Authorization: Bearer <key>` header").into_response();
    };
    let key = match state.store.authenticate(&secret).await {
        Ok(Some(key)) => key,
        Ok(None) => return ApiError::unauthorized("unknown or revoked API key").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !allowed.contains(&key.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return ApiError::forbidden(format!(
            "this operation needs one of the roles {names:?}; this key has role {:?}",
            key.role.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(Caller {
        key_id: key.id,
        name: key.name,
        role: key.role,
    });
    next.run(req).await
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then(|| secret.to_owned())
}
