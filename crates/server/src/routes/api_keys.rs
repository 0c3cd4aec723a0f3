//! API keys of the caller's tenant: create (the token is shown once), list (masked), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_core::{Id, IdKind};
use switchboard_identity::{IssuedKey, KeySpec};
use switchboard_store::{ApiKey, Scope};
use utoipa::ToSchema;

use super::{ApiKeyPage, ListResponse, path_id};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    Read,
    Write,
    Admin,
}

impl From<ScopeName> for Scope {
    fn from(s: ScopeName) -> Self {
        match s {
            ScopeName::Read => Scope::Read,
            ScopeName::Write => Scope::Write,
            ScopeName::Admin => Scope::Admin,
        }
    }
}

/// The scopes a key holds: its own and every scope below it.
fn implied_scopes(scope: Scope) -> Vec<ScopeName> {
    [(Scope::Read, ScopeName::Read), (Scope::Write, ScopeName::Write), (Scope::Admin, ScopeName::Admin)]
        .into_iter()
        .filter(|(s, _)| scope.allows(*s))
        .map(|(_, name)| name)
        .collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label for people, e.g. "billing service".
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// `admin` ⊇ `write` ⊇ `read`; the key gets the highest scope listed.
    #[schema(min_items = 1)]
    pub scopes: Vec<ScopeName>,
    /// When the key stops working; never when absent.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed: never the token itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scopes: Vec<ScopeName>,
    /// The first and last characters of the token, e.g. `sk_AbCd…wXyZ`.
    pub masked: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A newly created key. `token` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKeyOut,
    pub token: String,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            tenant_id: k.tenant_id.to_string(),
            name: k.name,
            scopes: implied_scopes(k.scope),
            masked: k.masked,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
        }
    }
}

/// Mints and stores a key in `tenant_id`, through the identity service.
pub(crate) async fn issue_key(
    state: &AppState,
    tenant_id: &Id,
    request: CreateApiKey,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let spec = KeySpec {
        name: request.name,
        scopes: request.scopes.into_iter().map(Scope::from).collect(),
        expires_at: request.expires_at,
    };
    let IssuedKey { key, token } = state.identity.create_api_key(tenant_id, spec).await?;
    Ok((StatusCode::CREATED, Json(ApiKeyCreated { key: key.into(), token })))
}

/// Creates an API key in the caller's tenant (admin scope)
///
/// `name` is a label for people, 1 to 200 characters. `scopes` lists any of `read`, `write` and
/// `admin`; as `admin` includes `write` and `write` includes `read`, the key gets the highest scope
/// listed. `expires_at`, when given, must be in the future; without it the key never expires. The
/// response carries the `sk_…` token, shown this once: only its digest and a masked form are
/// stored, so it cannot be retrieved again.
#[utoipa::path(
    post,
    path = "/api/api-keys",
    tag = "api keys",
    request_body = CreateApiKey,
    responses((status = 201, body = ApiKeyCreated)),
    security(("api_key" = []))
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    caller.require(Scope::Admin)?;
    issue_key(&state, &caller.key.tenant_id, request).await
}

/// Lists the caller's tenant's API keys, masked (admin scope)
///
/// Tokens are never shown: each key has `masked` (the first and last characters of its token), its
/// name, its scopes (its own and every scope below it), and its expiry and revocation times.
/// Revoked and expired keys are listed too. Newest first; `limit` is 1 to 100 (default 50); pass
/// the previous page's `next_cursor` as `cursor` to get the next page (it is absent on the last
/// page).
#[utoipa::path(
    get,
    path = "/api/api-keys",
    tag = "api keys",
    params(ApiKeyPage),
    responses((status = 200, body = ListResponse<ApiKeyOut>)),
    security(("api_key" = []))
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ApiKeyPage>,
) -> ApiResult<Json<ListResponse<ApiKeyOut>>> {
    caller.require(Scope::Admin)?;
    let page = params.to_page()?;
    let rows = state.store.list_api_keys(caller.tenant_id(), &page).await?;
    Ok(Json(ListResponse::from_rows(rows, &page, |k| k.id.to_string(), ApiKeyOut::from)))
}

/// Gets one API key of the caller's tenant, masked (admin scope)
///
/// Returns the key as listed: `masked` instead of the token, its name, scopes, expiry and
/// revocation time. A `key_…` id that is malformed or names no key of the caller's tenant is a 404.
#[utoipa::path(
    get,
    path = "/api/api-keys/{key_id}",
    tag = "api keys",
    params(("key_id" = String, Path, description = "The key id (`key_…`)")),
    responses((status = 200, body = ApiKeyOut), (status = 404, description = "No such key in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> ApiResult<Json<ApiKeyOut>> {
    caller.require(Scope::Admin)?;
    let id = path_id(IdKind::ApiKey, &key_id, "API key")?;
    let key = state
        .store
        .get_api_key(caller.tenant_id(), id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(key.into()))
}

/// Revokes an API key of the caller's tenant at once (admin scope)
///
/// The key stops working at once on the process that answers; other processes sharing the database
/// may still accept it for up to 5 seconds, from their cache of keys. Answers 204 with no body. A
/// key that is not in the caller's tenant, or is already revoked, is a 404, so a retried revocation
/// answers 404 once the first one succeeded.
#[utoipa::path(
    delete,
    path = "/api/api-keys/{key_id}",
    tag = "api keys",
    params(("key_id" = String, Path, description = "The key id (`key_…`)")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such unrevoked key in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let id = path_id(IdKind::ApiKey, &key_id, "API key")?;
    let revoked = state.identity.revoke_api_key(&caller.key.tenant_id, id.as_str()).await?;
    state.lookups.forget_keys();
    if revoked { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found("API key")) }
}
