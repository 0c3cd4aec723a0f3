//! Outgoing webhook endpoints (subscriptions) under `/api/integrations/webhooks`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_core::IdKind;
use switchboard_core::redact::{MASK, is_sensitive_header};
use switchboard_core::signature::SigningSecret;
use switchboard_store::{Endpoint, Scope};
use switchboard_webhooks::{EndpointChanges, EndpointSpec, SigningKind, WithSecret};
use utoipa::ToSchema;

use super::{EndpointPage, ListResponse, path_id, present};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, OptionalJson};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where messages are POSTed: an http(s) URL the SSRF guard allows.
    #[schema(max_length = 2048)]
    pub url: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    /// Event type names and `prefix.*` wildcards; empty or absent means every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A jq expression over `{id, type, timestamp, data}` that must yield `true` for the
    /// endpoint to receive the event.
    pub filter: Option<String>,
    /// A jq expression over `{id, type, timestamp, data}` whose result is sent as the body.
    pub transform: Option<String>,
    /// Static headers added to every request. Values of headers whose names suggest a
    /// credential (`authorization`, `x-api-key`, `…token…`, `…secret…`) are shown back as
    /// `********`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// At most this many deliveries per second to this endpoint.
    #[serde(default, deserialize_with = "crate::extract::integral::optional")]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_limit_per_second: Option<u32>,
    /// Defaults to true.
    pub enabled: Option<bool>,
    /// Deliver one message at a time, in event order.
    #[serde(default)]
    pub fifo: bool,
    /// Any JSON object, kept for the caller.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// A `whsec_<base64 of 24 to 64 bytes>` or `whsk_<base64 Ed25519 seed>` secret; generated
    /// when absent.
    pub secret: Option<String>,
    /// Which kind of secret to generate when none is supplied (default symmetric).
    pub signing: Option<SigningKind>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// A new filter, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub filter: Option<Option<String>>,
    /// A new transform, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub transform: Option<Option<String>>,
    /// Replaces every static header; a value of `********` keeps that header's current value.
    pub headers: Option<BTreeMap<String, String>>,
    /// A new limit, or `null` for none.
    #[serde(default, deserialize_with = "crate::extract::integral::present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    pub rate_limit_per_second: Option<Option<u32>>,
    /// Enabling clears the failure record; disabling stops deliveries (pending messages fail
    /// as `endpoint_disabled` and can be recovered later).
    pub enabled: Option<bool>,
    pub fifo: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    /// `ep_…`
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub filter: Option<String>,
    pub transform: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub rate_limit_per_second: Option<u32>,
    pub enabled: bool,
    /// Why the endpoint is disabled: `manual`, `gone` (it answered 410) or `failing` (it
    /// failed for too long).
    pub disabled_reason: Option<switchboard_store::DisabledReason>,
    pub fifo: bool,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub signing: SigningKind,
    /// For asymmetric signing: the `whpk_` key receivers verify with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Since when every attempt has failed; absent while the endpoint is healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret: only in the response that created the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn endpoint_out(endpoint: Endpoint, secret: &SigningSecret, now: DateTime<Utc>) -> EndpointOut {
    EndpointOut {
        id: endpoint.id.to_string(),
        url: endpoint.url,
        description: endpoint.description,
        event_types: endpoint.event_types,
        filter: endpoint.filter,
        transform: endpoint.transform,
        headers: masked(endpoint.headers),
        rate_limit_per_second: endpoint.rate_limit_per_second,
        enabled: endpoint.enabled,
        disabled_reason: endpoint.disabled_reason,
        fifo: endpoint.fifo,
        metadata: serde_json::from_str(&endpoint.metadata).unwrap_or_else(|_| Value::Object(Map::new())),
        signing: SigningKind::of(secret),
        public_key: secret.public_key(),
        failing_since: endpoint.failing_since,
        previous_secret_expires_at: endpoint.previous_secret_expires_at.filter(|at| *at > now),
        created_at: endpoint.created_at,
        updated_at: endpoint.updated_at,
        secret: None,
    }
}

/// Header values that are credentials are not shown back: only that they are set.
fn masked(headers: BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| match is_sensitive_header(&name) {
            true => (name, MASK.to_string()),
            false => (name, value),
        })
        .collect()
}

async fn to_out(state: &AppState, endpoint: Endpoint) -> ApiResult<EndpointOut> {
    let secret = state.webhooks.current_secret(&endpoint).await.map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok(endpoint_out(endpoint, &secret, state.clock.now()))
}

/// Creates an outgoing webhook endpoint (write scope)
///
/// `url` is where messages are POSTed: an http(s) URL the SSRF guard allows. `event_types` takes
/// event type names, `prefix.*` wildcards or `*`; empty or absent means every type, and an exact
/// name must be registered (or be one Switchboard publishes itself). `filter` and `transform` are
/// jq expressions over `{id, type, timestamp, data}`: the filter must yield `true` for the endpoint
/// to receive an event, and the transform's result is sent as the body. A signing secret is
/// generated unless `secret` is given: HMAC (`whsec_…`) by default, Ed25519 (`whsk_…`) with
/// `signing: "asymmetric"`. The 201 response carries the secret; it is not shown again except
/// through `GET …/{endpoint_id}/secret`.
#[utoipa::path(
    post,
    path = "/api/integrations/webhooks",
    tag = "webhooks",
    request_body = CreateEndpoint,
    responses((status = 201, body = EndpointOut)),
    security(("api_key" = []))
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    caller.require(Scope::Write)?;
    let spec = EndpointSpec {
        url: request.url,
        description: request.description,
        event_types: request.event_types,
        filter: request.filter,
        transform: request.transform,
        headers: request.headers,
        rate_limit_per_second: request.rate_limit_per_second,
        enabled: request.enabled.unwrap_or(true),
        fifo: request.fifo,
        metadata: request.metadata,
        secret: request.secret,
        signing: request.signing.unwrap_or_default(),
    };
    let WithSecret { endpoint, secret } = state.webhooks.create_endpoint(&caller.key.tenant_id, spec).await?;
    let mut out = endpoint_out(endpoint, &secret, state.clock.now());
    out.secret = Some(secret.to_text().to_string());
    Ok((StatusCode::CREATED, Json(out)))
}

/// Lists endpoints, newest first (read scope)
///
/// Each endpoint shows its configuration, its signing kind (with the `whpk_` public key for
/// asymmetric signing) and its health: `enabled`, `disabled_reason` and `failing_since`. Values of
/// credential-like static headers read as `********`, and the secret is never included. `limit` is
/// 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to get the next page
/// (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks",
    tag = "webhooks",
    params(EndpointPage),
    responses((status = 200, body = ListResponse<EndpointOut>)),
    security(("api_key" = []))
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<EndpointPage>,
) -> ApiResult<Json<ListResponse<EndpointOut>>> {
    caller.require(Scope::Read)?;
    let page = params.to_page()?;
    let rows = state.store.list_endpoints(caller.tenant_id(), &page).await?;
    let list = ListResponse::from_rows(rows, &page, |e| e.id.to_string(), |e| e);
    let mut data = Vec::with_capacity(list.data.len());
    for endpoint in list.data {
        data.push(to_out(&state, endpoint).await?);
    }
    Ok(Json(ListResponse { data, next_cursor: list.next_cursor }))
}

pub(crate) async fn find_endpoint(state: &AppState, caller: &Caller, raw_id: &str) -> ApiResult<Endpoint> {
    let id = path_id(IdKind::Endpoint, raw_id, "endpoint")?;
    state.store.get_endpoint(caller.tenant_id(), id.as_str()).await?.ok_or_else(|| ApiError::not_found("endpoint"))
}

/// Gets one endpoint (read scope)
///
/// Returns the endpoint as listed: its configuration, signing kind, health and, after a secret
/// rotation, until when the previous secret still signs. Values of credential-like static headers
/// read as `********`, and the secret is not included (see `GET …/{endpoint_id}/secret`). An
/// unknown `ep_…` id is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    responses((status = 200, body = EndpointOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    caller.require(Scope::Read)?;
    let endpoint = find_endpoint(&state, &caller, &endpoint_id).await?;
    Ok(Json(to_out(&state, endpoint).await?))
}

/// Changes an endpoint (write scope); absent fields stay as they are
///
/// Given fields are checked as on creation. `filter`, `transform` and `rate_limit_per_second` can
/// be set to `null` to remove them. `headers` replaces every static header; a value of `********`
/// keeps that header's current value. Enabling clears the failure record; disabling stops
/// deliveries, and pending messages fail as `endpoint_disabled` (they can be recovered later with
/// `POST …/{endpoint_id}/recover`). The signing secret changes only through
/// `POST …/{endpoint_id}/rotate-secret`.
#[utoipa::path(
    patch,
    path = "/api/integrations/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
    ApiJson(request): ApiJson<UpdateEndpoint>,
) -> ApiResult<Json<EndpointOut>> {
    caller.require(Scope::Write)?;
    let id = path_id(IdKind::Endpoint, &endpoint_id, "endpoint")?;
    let changes = EndpointChanges {
        url: request.url,
        description: request.description,
        event_types: request.event_types,
        filter: request.filter,
        transform: request.transform,
        headers: request.headers,
        rate_limit_per_second: request.rate_limit_per_second,
        enabled: request.enabled,
        fifo: request.fifo,
        metadata: request.metadata,
    };
    let updated = state.webhooks.update_endpoint(&caller.key.tenant_id, id.as_str(), changes).await?;
    Ok(Json(to_out(&state, updated).await?))
}

/// Deletes an endpoint (write scope)
///
/// The endpoint stops receiving events and its signing secrets are deleted. Its pending messages
/// are not delivered: they fail when they next come up for delivery. Answers 204 with no body; an
/// unknown or already deleted endpoint is a 404.
#[utoipa::path(
    delete,
    path = "/api/integrations/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Write)?;
    let id = path_id(IdKind::Endpoint, &endpoint_id, "endpoint")?;
    match state.webhooks.delete_endpoint(&caller.key.tenant_id, id.as_str()).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("endpoint")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretOut {
    /// The current signing secret (`whsec_…` or `whsk_…`).
    pub secret: String,
    /// For asymmetric signing: the `whpk_` key receivers verify with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Gets an endpoint's current signing secret (admin scope: it is a credential)
///
/// Returns the secret messages are signed with now: a `whsec_…` HMAC secret, or a `whsk_…` Ed25519
/// key with the `whpk_…` public key receivers verify with. During a rotation's grace period the
/// previous secret also signs, but only the current one is returned. An unknown endpoint is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks/{endpoint_id}/secret",
    tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    responses((status = 200, body = SecretOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
) -> ApiResult<Json<SecretOut>> {
    caller.require(Scope::Admin)?;
    let endpoint = find_endpoint(&state, &caller, &endpoint_id).await?;
    let secret = state.webhooks.current_secret(&endpoint).await.map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok(Json(SecretOut { secret: secret.to_text().to_string(), public_key: secret.public_key() }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated (of the endpoint's kind) when absent.
    pub secret: Option<String>,
    /// How long the old secret keeps signing beside the new one (default 86400, at most 7
    /// days).
    #[serde(default, deserialize_with = "crate::extract::integral::optional")]
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<u64>,
}

/// Rotates an endpoint's signing secret (admin scope)
///
/// The body is optional. `secret` is the new secret, generated (of the endpoint's current kind)
/// when absent; `grace_period_seconds` is how long the old secret keeps signing beside the new one,
/// 86400 by default and at most 604800 (7 days). Both secrets sign during the grace period, so
/// receivers have time to switch. The response is the endpoint with the new secret in `secret` and,
/// when there is a grace period, `previous_secret_expires_at`.
#[utoipa::path(
    post,
    path = "/api/integrations/webhooks/{endpoint_id}/rotate-secret",
    tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    request_body = RotateSecret,
    responses((status = 200, body = EndpointOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
    OptionalJson(request): OptionalJson<RotateSecret>,
) -> ApiResult<Json<EndpointOut>> {
    caller.require(Scope::Admin)?;
    let id = path_id(IdKind::Endpoint, &endpoint_id, "endpoint")?;
    let grace = request.grace_period_seconds.map(std::time::Duration::from_secs);
    let WithSecret { endpoint: rotated, secret } =
        state.webhooks.rotate_secret(&caller.key.tenant_id, id.as_str(), request.secret.as_deref(), grace).await?;
    let mut out = endpoint_out(rotated, &secret, state.clock.now());
    out.secret = Some(secret.to_text().to_string());
    Ok(Json(out))
}
