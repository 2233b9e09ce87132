//! The optional HTTP ingress: lets an external system (a webhook) push changes in without a Temporal
//! client. Off by default; `--ingress ADDR` turns it on, and callers must present the bearer token
//! read from `--ingress-token-env` (default `STATEFUL_INGRESS_TOKEN`).
//!
//! - `POST /v1/{Entity}/{id}` with the entity's JSON data: an acknowledged `update`
//!   (`?strategy=$replace` etc.), sent with Temporal's update-with-start (the entity's workflow is
//!   started when it is not running; conflict policy `USE_EXISTING`). The answer is the workflow's:
//!   `200 {workflowId, version, changed}` once the change is applied, or `422 {error}` with the
//!   reason the workflow refused it (`409` when the workflow is ending, `503` when it was handing
//!   over to a new run for longer than the retries last).
//! - `DELETE /v1/{Entity}/{id}`: a `delete` of the entity (its workflow then completes).
//! - `GET /v1/{Entity}/{id}`: the `data` query (`?view=state` for the normalized `state`).
//!
//! Everything is checked against the worker's schema before anything is sent: bad JSON, an unknown
//! entity, an id that does not match the body, or a missing token get a 4xx with a clear message and
//! change nothing.
//!
//! Every request is within the ingress's [`HttpLimits`] (see [`crate::auth::guard`]): by default 100
//! requests a second with bursts of 200 (`429` beyond, after up to a second's pacing), bodies up to
//! [`DEFAULT_MAX_BODY`] (`413`), and 30 s per request (`408` for a body that does not arrive in time,
//! `503` for an answer that does not).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_engine::{Schema, wire};
use temporalio_client::Client;
use tracing::{info, warn};

use crate::auth::{self, BearerToken, HttpLimits};

/// The default body limit (2 MiB): a body becomes one `update`, and Temporal refuses a payload
/// over 2 MB by default (with `--compress`, a larger one may fit: raise `--ingress-max-body`).
pub const DEFAULT_MAX_BODY: usize = 2 * 1024 * 1024;
/// The default rate limit, requests per second: each request is a call to Temporal.
pub const DEFAULT_RATE_PER_SECOND: u32 = 100;
/// The default burst above the rate.
pub const DEFAULT_BURST: u32 = 200;

/// The ingress's default limits.
pub fn default_limits() -> HttpLimits {
    HttpLimits {
        max_body: DEFAULT_MAX_BODY,
        timeout: std::time::Duration::from_secs(30),
        rate_per_second: DEFAULT_RATE_PER_SECOND,
        burst: DEFAULT_BURST,
        max_wait: HttpLimits::DEFAULT_MAX_WAIT,
    }
}

/// What the ingress needs.
pub struct Ingress {
    /// The Temporal client.
    pub client: Client,
    /// The worker's task queue (update-with-start starts workflows there).
    pub task_queue: String,
    /// The worker's schema.
    pub schema: Option<Arc<Schema>>,
    /// The bearer token callers must present (only its hash is kept).
    token: BearerToken,
    /// Rate, body and time limits.
    limits: HttpLimits,
}

impl Ingress {
    /// An ingress that accepts `token`.
    pub fn new(
        client: Client,
        task_queue: String,
        schema: Option<Arc<Schema>>,
        token: &str,
    ) -> Ingress {
        Ingress {
            client,
            task_queue,
            schema,
            token: BearerToken::new(token),
            limits: default_limits(),
        }
    }

    /// The same ingress with other limits.
    pub fn with_limits(mut self, limits: HttpLimits) -> Ingress {
        self.limits = limits;
        self
    }

    /// The routes, within the limits.
    pub fn router(self) -> Router {
        let limits = self.limits;
        let routes = Router::new()
            .route(
                "/v1/{entity}/{id}",
                get(get_entity).post(post_entity).delete(delete_entity),
            )
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "not found: use /v1/{Entity}/{id} (POST, DELETE, GET)",
                )
            })
            .with_state(Arc::new(self));
        auth::guard(routes, limits, "ingress")
    }

    /// Serves on `addr` until the process ends; returns the bound address.
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve the ingress on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(error = %e, "the ingress stopped");
            }
        });
        Ok(bound)
    }

    #[allow(clippy::result_large_err)] // the error is the response itself, built once per refusal
    fn authorized(&self, h: &HeaderMap) -> Result<(), Response> {
        match auth::bearer(h) {
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`",
            )),
            Some(t) if self.token.matches(t) => Ok(()),
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong ingress token")),
        }
    }

    #[allow(clippy::result_large_err)]
    fn schema(&self, entity: &str) -> Result<&Schema, Response> {
        let s = self.schema.as_deref().ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the worker has no schema (start it with --schema)",
            )
        })?;
        s.entity(entity)
            .map_err(|e| error(StatusCode::NOT_FOUND, &e.to_string()))?;
        Ok(s)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

fn failed(e: anyhow::Error) -> Response {
    let text = format!("{e:#}");
    let status = if text.contains("not found") || text.contains("NotFound") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    error(status, &text)
}

async fn post_entity(
    State(ing): State<Arc<Ingress>>,
    Path((entity, id)): Path<(String, String)>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = ing.authorized(&h) {
        return r;
    }
    let schema = match ing.schema(&entity) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut data: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be the entity as a JSON object",
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    if let Some(attr) = schema
        .entity(&entity)
        .ok()
        .and_then(|d| d.id_attribute.single())
    {
        match data.get(attr) {
            None | Some(Value::Null) => data[attr] = json!(id),
            Some(v) if stateful_engine::normalize::id_key(v).as_deref() == Some(id.as_str()) => {}
            Some(v) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body's `{attr}` is {v} but the URL says \"{id}\""),
                );
            }
        }
    }
    let mut msg = json!({"data": data, "entityName": entity});
    if let Some(s) = q.get("strategy") {
        msg["strategy"] = json!(s);
    }
    if let Err(e) = wire::parse_update(schema, &entity, &msg) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let wid = ops::workflow_id(&entity, &id);
    let input = json!({"id": id, "entityName": entity});
    match ops::update_with_start(&ing.client, &ing.task_queue, &wid, &input, "update", &msg).await {
        Ok(v) => {
            info!(workflow_id = %wid, version = %v["version"], "ingress: update applied");
            (
                StatusCode::OK,
                axum::Json(json!({
                    "workflowId": wid,
                    "version": v["version"],
                    "changed": v["changed"],
                })),
            )
                .into_response()
        }
        Err(e) => match e.downcast_ref::<ops::Refused>() {
            Some(ops::Refused(reason)) => {
                info!(workflow_id = %wid, "ingress: update refused");
                error(refusal_status(reason), reason)
            }
            None => failed(e),
        },
    }
}

/// The status of a change the workflow refused: `409` when it is ending (it takes no more changes),
/// `503` when it kept handing over to a new run (`retry:`: the caller may send it again), `422` for
/// a change it cannot apply (the reason says why).
fn refusal_status(reason: &str) -> StatusCode {
    if reason.starts_with("retry:") {
        StatusCode::SERVICE_UNAVAILABLE
    } else if reason.starts_with("refused: the workflow is ending") {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

async fn delete_entity(
    State(ing): State<Arc<Ingress>>,
    Path((entity, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = ing.authorized(&h) {
        return r;
    }
    if let Err(r) = ing.schema(&entity) {
        return r;
    }
    let wid = ops::workflow_id(&entity, &id);
    let msg = json!({"deletions": {entity.clone(): [id]}});
    match ops::signal(&ing.client, &wid, "delete", Some(&msg)).await {
        Ok(()) => {
            info!(workflow_id = %wid, "ingress: delete");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"workflowId": wid, "signal": "delete"})),
            )
                .into_response()
        }
        Err(e) => failed(e),
    }
}

async fn get_entity(
    State(ing): State<Arc<Ingress>>,
    Path((entity, id)): Path<(String, String)>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = ing.authorized(&h) {
        return r;
    }
    if let Err(r) = ing.schema(&entity) {
        return r;
    }
    let view = q.get("view").map(String::as_str).unwrap_or("data");
    if !matches!(view, "data" | "state" | "status" | "version" | "api") {
        return error(
            StatusCode::BAD_REQUEST,
            "`view` is one of data, state, status, version, api",
        );
    }
    let wid = ops::workflow_id(&entity, &id);
    match ops::query(&ing.client, &wid, view).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_answer_by_their_kind() {
        assert_eq!(
            refusal_status("User:u1… would run as a child workflow whose id is 1010 bytes long"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            refusal_status(
                "refused: the workflow is ending (completed or cancelled) and takes no more changes"
            ),
            StatusCode::CONFLICT
        );
        assert_eq!(
            refusal_status(
                "refused: with this change the workflow's state would take 3000000 bytes"
            ),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            refusal_status("retry: the workflow is continuing as new"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
