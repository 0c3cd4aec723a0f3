//! Tenants, managed by admin keys of the operator tenant (the one created at first start).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_core::IdKind;
use switchboard_identity::IssuedKey;
use switchboard_store::Tenant;
use utoipa::ToSchema;

use super::api_keys::{ApiKeyCreated, CreateApiKey, issue_key};
use super::{ListResponse, TenantPage, path_id};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    /// The operator tenant may manage other tenants.
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
}

/// A new tenant and its first admin key (the token is shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: TenantOut,
    pub api_key: ApiKeyCreated,
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self { id: t.id.to_string(), name: t.name, is_operator: t.is_operator, created_at: t.created_at }
    }
}

/// Creates a tenant with a first admin key (operator admin only)
///
/// Only an admin-scope key of the operator tenant (the one created at first start) may call this;
/// any other key is a 403. `name` is trimmed and must be 1 to 200 characters without control
/// characters. The tenant and its first key (named `admin`, with the admin scope and no expiry) are
/// stored together, both or neither. The response carries that key's `sk_…` token, which is shown
/// this once and cannot be retrieved again.
#[utoipa::path(
    post,
    path = "/api/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, body = TenantCreated)),
    security(("api_key" = []))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    caller.require_operator()?;
    let (created, IssuedKey { key, token }) = state.identity.create_tenant(&request.name).await?;
    let api_key = ApiKeyCreated { key: key.into(), token };
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant: created.into(), api_key })))
}

/// Lists tenants, newest first (operator admin only)
///
/// Only an admin-scope key of the operator tenant (the one created at first start) may call this;
/// any other key is a 403. Each tenant shows its id, name, creation time and whether it is the
/// operator tenant. `limit` is 1 to 100 (default 50); pass the previous page's `next_cursor` as
/// `cursor` to get the next page (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/tenants",
    tag = "tenants",
    params(TenantPage),
    responses((status = 200, body = ListResponse<TenantOut>)),
    security(("api_key" = []))
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<TenantPage>,
) -> ApiResult<Json<ListResponse<TenantOut>>> {
    caller.require_operator()?;
    let page = params.to_page()?;
    let rows = state.store.list_tenants(&page).await?;
    Ok(Json(ListResponse::from_rows(rows, &page, |t| t.id.to_string(), TenantOut::from)))
}

/// Gets one tenant (operator admin only)
///
/// Only an admin-scope key of the operator tenant (the one created at first start) may call this;
/// any other key is a 403. `tenant_id` is a `ten_…` id; one that is malformed or names no tenant is
/// a 404.
#[utoipa::path(
    get,
    path = "/api/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id (`ten_…`)")),
    responses((status = 200, body = TenantOut), (status = 404, description = "No such tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<TenantOut>> {
    caller.require_operator()?;
    let id = path_id(IdKind::Tenant, &tenant_id, "tenant")?;
    let tenant = state.store.get_tenant(id.as_str()).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(tenant.into()))
}

/// Creates an API key in another tenant (operator admin only)
///
/// Only an admin-scope key of the operator tenant (the one created at first start) may call this;
/// any other key is a 403. It lets the operator issue a key for a tenant without holding one of
/// that tenant's keys; the body is the same as for `POST /api/api-keys`: the key gets the highest
/// scope listed, and `expires_at`, when given, must be in the future. The response carries the
/// `sk_…` token, shown this once. A tenant that does not exist is a 404.
#[utoipa::path(
    post,
    path = "/api/tenants/{tenant_id}/api-keys",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id (`ten_…`)")),
    request_body = CreateApiKey,
    responses((status = 201, body = ApiKeyCreated), (status = 404, description = "No such tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn create_tenant_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    ApiJson(request): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    caller.require_operator()?;
    let id = path_id(IdKind::Tenant, &tenant_id, "tenant")?;
    let tenant = state.store.get_tenant(id.as_str()).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    issue_key(&state, &tenant.id, request).await
}
