//! The marketplace: browsing the catalog of providers, installing one as a connection,
//! configuring its credentials, and the installed connections.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_connectors::manifest::{Auth, Category};
use switchboard_connectors::{Install, Provider, Query, Sort};
use switchboard_core::{Id, IdKind};
use switchboard_store::{Connection, Scope};
use utoipa::{IntoParams, ToSchema};

use super::{ConnectionPage, DEFAULT_PAGE, ListResponse, MAX_PAGE, path_id};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// Only providers in this category (`communication`, `development`, `crm`, …).
    #[param(schema_with = category_schema)]
    pub category: Option<String>,
    /// Words that must all appear in the name, display name, description or categories.
    #[param(max_length = 200)]
    pub search: Option<String>,
    /// `popularity` (most installed first; the default), `name` or `category`.
    #[param(inline)]
    pub sort: Option<CatalogSort>,
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = r"^[0-9]{0,9}$")]
    pub cursor: Option<String>,
}

/// How the catalog is ordered.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSort {
    /// Most installed first, then by name.
    Popularity,
    Name,
    /// By first category, then by name.
    Category,
}

/// The categories the catalog knows, as the parameter's enumeration.
fn category_schema() -> utoipa::openapi::Object {
    let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names))
        .build()
}

/// A provider as the catalog lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationSummary {
    /// The template name to install it by.
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub categories: Vec<String>,
    pub docs_url: Option<String>,
    /// The auth modes a connection can use: `oauth2`, `oauth2_client_credentials`,
    /// `api_key`, `bearer`, `basic` or `none`.
    pub auth_modes: Vec<String>,
    pub actions: Vec<String>,
    /// Connections of this provider across all tenants.
    pub installs: u64,
}

/// A provider with everything needed to install and use it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationDetail {
    #[serde(flatten)]
    pub summary: IntegrationSummary,
    pub auth: Vec<AuthOption>,
    /// The install form: `config_overrides` takes these fields.
    pub connection_config: Vec<ConfigFieldOut>,
    pub actions_detail: Vec<ActionOut>,
    /// The documented quota, which calls through a connection keep to.
    pub rate_limit: Option<RateLimitOut>,
    /// Pagination styles of the provider's list endpoints, by name.
    pub pagination: BTreeMap<String, String>,
    /// The API version sent by default; pin another with the `api_version` config field.
    pub api_version: Option<String>,
    /// Seconds GET responses are served from the proxy cache; absent when not cached.
    pub cache_ttl_seconds: Option<u32>,
    /// The signature scheme of the provider's webhooks, when it sends any.
    pub webhook_scheme: Option<String>,
    /// How the provider proves the webhook address: `slack_url_verification`,
    /// `zoom_url_validation`, `meta_hub_challenge`, `dropbox_challenge`,
    /// `microsoft_graph_validation`; the receiver answers these.
    pub webhook_handshakes: Vec<String>,
    /// Credentials any connection of a provider that sends webhooks may hold besides its
    /// auth mode's: the signing secret (and the previous one during a rotation).
    pub webhook_credential_fields: Vec<CredentialFieldOut>,
    pub has_health_check: bool,
    /// The manifest file the provider was loaded from (`connectors/…` for bundled ones).
    pub source: String,
}

/// One way to authenticate a connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthOption {
    pub mode: String,
    /// What `POST /api/marketplace/configure` takes as `credentials` for this mode.
    pub credential_fields: Vec<CredentialFieldOut>,
    /// For OAuth modes: the scopes requested.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialFieldOut {
    pub name: String,
    pub label: String,
    pub required: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigFieldOut {
    pub name: String,
    pub label: String,
    pub description: Option<String>,
    /// `string`, `integer`, `boolean`, `url` or `enum`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    /// Stored encrypted with the credentials and never shown back.
    pub secret: bool,
    /// The value used when the install leaves the field out: a string, number or boolean
    /// like the field's type.
    #[schema(value_type = Option<Value>)]
    pub default: Option<Value>,
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionOut {
    pub name: String,
    pub description: String,
    pub method: String,
    pub path: String,
    /// The JSON Schema `input` must satisfy.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Whether the action follows the provider's pagination (see `max_pages`).
    pub paginated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitOut {
    pub requests: u32,
    pub per_seconds: u32,
    /// `connection` or `provider`: what shares the quota.
    pub scope: String,
}

fn summary(provider: &Provider, installs: u64) -> IntegrationSummary {
    let manifest = &provider.manifest;
    IntegrationSummary {
        name: manifest.name.clone(),
        display_name: manifest.display_name.clone(),
        description: manifest.description.clone(),
        categories: manifest.categories.iter().map(|c| c.as_str().to_string()).collect(),
        docs_url: manifest.docs_url.clone(),
        auth_modes: manifest.auth.iter().map(|a| a.mode().to_string()).collect(),
        actions: manifest.actions.iter().map(|a| a.name.clone()).collect(),
        installs,
    }
}

fn detail(provider: &Provider, installs: u64) -> IntegrationDetail {
    let manifest = &provider.manifest;
    IntegrationDetail {
        summary: summary(provider, installs),
        auth: manifest
            .auth
            .iter()
            .map(|auth| AuthOption {
                mode: auth.mode().to_string(),
                credential_fields: auth
                    .credential_fields()
                    .into_iter()
                    .map(|f| CredentialFieldOut { name: f.name, label: f.label, required: f.required })
                    .collect(),
                scopes: match auth {
                    Auth::Oauth2(oauth) => oauth.scopes.clone(),
                    Auth::Oauth2ClientCredentials(cc) => cc.scopes.clone(),
                    _ => Vec::new(),
                },
            })
            .collect(),
        connection_config: manifest
            .connection_config
            .iter()
            .chain(&provider.webhook_config_fields())
            .map(|field| ConfigFieldOut {
                name: field.name.clone(),
                label: field.label.clone(),
                description: field.description.clone(),
                kind: variant_name(&field.kind),
                required: field.required,
                secret: field.secret,
                default: field.default.clone(),
                pattern: field.pattern.clone(),
                values: field.values.clone(),
            })
            .collect(),
        actions_detail: manifest
            .actions
            .iter()
            .map(|action| ActionOut {
                name: action.name.clone(),
                description: action.description.clone(),
                method: action.method.as_reqwest().to_string(),
                path: action.path.clone(),
                input_schema: action.input.clone(),
                paginated: action.pagination.is_some(),
            })
            .collect(),
        rate_limit: manifest.rate_limit.as_ref().map(|limit| RateLimitOut {
            requests: limit.requests,
            per_seconds: limit.per_seconds,
            scope: variant_name(&limit.scope),
        }),
        pagination: manifest.pagination.iter().map(|(name, style)| (name.clone(), style.style().to_string())).collect(),
        api_version: manifest.api_version.as_ref().map(|v| v.default.clone()),
        cache_ttl_seconds: manifest.cache.as_ref().map(|c| c.ttl_seconds),
        webhook_scheme: manifest.webhooks.as_ref().map(|w| variant_name(&w.scheme)),
        webhook_handshakes: manifest
            .webhooks
            .as_ref()
            .map(|w| w.handshakes.iter().map(variant_name).collect())
            .unwrap_or_default(),
        webhook_credential_fields: provider
            .webhook_credential_fields()
            .into_iter()
            .map(|f| CredentialFieldOut { name: f.name, label: f.label, required: f.required })
            .collect(),
        has_health_check: manifest.health_check.is_some(),
        source: provider.source.clone(),
    }
}

/// The snake_case name serde gives a unit enum variant.
fn variant_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        _ => String::new(),
    }
}

fn parse_category(text: &str) -> ApiResult<Category> {
    Category::ALL.into_iter().find(|category| category.as_str() == text).ok_or_else(|| {
        let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        ApiError::malformed("category", format!("must be one of {}", names.join(", ")))
    })
}

/// Browses the catalog of providers (read scope)
///
/// Lists the providers that can be installed, each with its auth modes, action names and number of
/// installs across all tenants. `category` narrows the list to one category, and `search` to
/// providers whose name, display name, description or categories contain all its words (at most 200
/// characters). `sort` is `popularity` (most installed first; the default), `name` or `category`.
/// `limit` is 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to get the
/// next page (it is absent on the last page). An unknown category or sort is a 400.
#[utoipa::path(
    get,
    path = "/api/marketplace/integrations",
    tag = "marketplace",
    params(CatalogParams),
    responses((status = 200, body = ListResponse<IntegrationSummary>)),
    security(("api_key" = []))
)]
pub async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<CatalogParams>,
) -> ApiResult<Json<ListResponse<IntegrationSummary>>> {
    caller.require(Scope::Read)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::malformed("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    // The catalog is small and held in memory; its cursor is simply the offset.
    let offset = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => cursor
            .parse::<usize>()
            .map_err(|_| ApiError::malformed("cursor", "must be the next_cursor of a previous page"))?,
        None => 0,
    };
    if params.search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::malformed("search", "must be at most 200 characters"));
    }
    let query = Query {
        category: params.category.as_deref().map(parse_category).transpose()?,
        search: params.search.clone(),
        sort: match params.sort {
            None | Some(CatalogSort::Popularity) => Sort::Popularity,
            Some(CatalogSort::Name) => Sort::Name,
            Some(CatalogSort::Category) => Sort::Category,
        },
        offset,
        limit: limit as usize,
    };
    let installs = state.store.installs_per_provider().await?;
    let (page, more) = state.connections.catalog().search(&query, &installs);
    let next_cursor = more.then(|| (offset + page.len()).to_string());
    let data = page.iter().map(|p| summary(p, installs.get(p.name()).copied().unwrap_or(0))).collect();
    Ok(Json(ListResponse { data, next_cursor }))
}

/// Gets one provider with what is needed to install and use it (read scope)
///
/// `name` is the provider's template name, e.g. `slack`. Returns its auth modes and the credentials
/// each needs, the install form (`connection_config`, which `config_overrides` takes), its actions
/// with their input schemas, and its rate limit, pagination, caching and webhook details. An
/// unknown name is a 404 that suggests close names.
#[utoipa::path(
    get,
    path = "/api/marketplace/integrations/{name}",
    tag = "marketplace",
    params(("name" = String, Path, description = "The provider's template name, e.g. `slack`")),
    responses((status = 200, body = IntegrationDetail), (status = 404, description = "No such provider; the detail suggests close names", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<IntegrationDetail>> {
    caller.require(Scope::Read)?;
    let provider = state.connections.provider(&name)?;
    let installs = state.store.installs_per_provider().await?;
    Ok(Json(detail(provider, installs.get(provider.name()).copied().unwrap_or(0))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The provider's name in the catalog.
    pub template_name: String,
    /// Values for the provider's install form (`connection_config`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config_overrides: Map<String, Value>,
    /// A name for the connection; the provider's display name when absent.
    #[schema(max_length = 200)]
    pub custom_name: Option<String>,
    /// Which of the provider's auth modes to use; required with `credentials` when it offers
    /// several, the first one otherwise.
    pub auth_mode: Option<String>,
    /// Credentials to store right away (as `configure` would).
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureRequest {
    /// The connection, `conn_…`.
    #[schema(pattern = r"^conn_[0-7][0-9a-hjkmnp-tv-z]{25}$")]
    pub integration_id: String,
    /// Credential fields for the connection's auth mode; fields not given keep their values,
    /// so one credential can be rotated alone.
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
}

/// An installed provider. Credentials are never shown: only which fields are set, and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionOut {
    /// `conn_…`
    pub id: String,
    /// The provider's template name.
    pub provider: String,
    pub name: String,
    pub auth_mode: String,
    /// The non-secret config values.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Which credentials (and secret config values) are set, and when each was set.
    pub credentials_set: BTreeMap<String, DateTime<Utc>>,
    /// Required credentials not set yet.
    pub credentials_missing: Vec<String>,
    /// How far the credentials got: `missing_credentials`, `configured`, `ok` (the provider
    /// accepted them), `rejected` (it refused them) or `auth_failed` (it refused the OAuth2
    /// grant for good: connect again).
    pub auth_state: switchboard_store::AuthState,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_test_at: Option<DateTime<Utc>>,
    pub last_test_ok: Option<bool>,
    /// For OAuth2 connections: what is known of the tokens (never the tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthOut>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthOut {
    /// Whether the connect flow has completed (an access token is held).
    pub connected: bool,
    /// When the access token expires; absent when the provider did not say.
    pub expires_at: Option<DateTime<Utc>>,
    /// The scopes the provider granted.
    pub scopes: Vec<String>,
    pub has_refresh_token: bool,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Refreshes that failed in a row.
    pub refresh_failures: u32,
    /// No refresh is tried before this, after failures.
    pub next_refresh_attempt_at: Option<DateTime<Utc>>,
}

pub(crate) fn connection_out(state: &AppState, connection: Connection) -> ConnectionOut {
    let missing = state
        .connections
        .catalog()
        .get(&connection.provider)
        .and_then(|p| p.auth(Some(&connection.auth_mode)).cloned())
        .map(|auth| {
            auth.credential_fields()
                .into_iter()
                .filter(|f| f.required && !connection.credential_fields.contains_key(&f.name))
                .map(|f| f.name)
                .collect()
        })
        .unwrap_or_default();
    let oauth = (connection.auth_mode == "oauth2").then(|| OAuthOut {
        // A grant the provider refused for good connects nothing, tokens or not.
        connected: connection.credential_fields.contains_key("access_token")
            && connection.auth_state != switchboard_store::AuthState::AuthFailed,
        expires_at: connection.token.expires_at,
        scopes: connection.token.scopes.clone(),
        has_refresh_token: connection.credential_fields.contains_key("refresh_token"),
        last_refresh_at: connection.token.last_refresh_at,
        refresh_failures: connection.token.refresh_failures,
        next_refresh_attempt_at: connection.token.refresh_retry_at,
    });
    ConnectionOut {
        id: connection.id.to_string(),
        provider: connection.provider,
        name: connection.name,
        auth_mode: connection.auth_mode,
        config: serde_json::from_str(&connection.config).unwrap_or_else(|_| Value::Object(Map::new())),
        credentials_set: connection.credential_fields,
        credentials_missing: missing,
        auth_state: connection.auth_state,
        last_success_at: connection.last_success_at,
        last_error: connection.last_error,
        last_error_at: connection.last_error_at,
        last_test_at: connection.last_test_at,
        last_test_ok: connection.last_test_ok,
        oauth,
        created_at: connection.created_at,
        updated_at: connection.updated_at,
    }
}

/// Installs a provider as a connection of the caller's tenant (write scope)
///
/// `template_name` names the provider, `config_overrides` fills its install form, and `custom_name`
/// names the connection (the provider's display name when absent). `auth_mode` picks one of the
/// provider's auth modes, the first when absent; it is required with `credentials` when the
/// provider offers several. Credentials can be given now, as `configure` would take them, or later.
/// The config is checked against the provider's form and any credentials against the auth mode;
/// every problem is reported at once, per field, in a 422, and nothing is stored unless all is
/// well. An unknown provider is a 404 that suggests close names.
#[utoipa::path(
    post,
    path = "/api/marketplace/install",
    tag = "marketplace",
    request_body = InstallRequest,
    responses((status = 201, body = ConnectionOut), (status = 404, description = "No such provider; the detail suggests close names", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<InstallRequest>,
) -> ApiResult<(StatusCode, Json<ConnectionOut>)> {
    caller.require(Scope::Write)?;
    let install = Install {
        template_name: request.template_name,
        config_overrides: request.config_overrides,
        custom_name: request.custom_name,
        auth_mode: request.auth_mode,
        credentials: request.credentials,
    };
    let connection = state.connections.install(&caller.key.tenant_id, install).await?;
    Ok((StatusCode::CREATED, Json(connection_out(&state, connection))))
}

/// Sets or rotates a connection's credentials (write scope)
///
/// `integration_id` is the connection (`conn_…`) and `credentials` holds fields of its auth mode,
/// as the provider's detail lists them. Fields not given keep their stored values, so one
/// credential can be rotated alone. The merged credentials are checked (a 422 names each problem),
/// stored encrypted and never shown again: the connection only says which fields are set, and when.
/// Setting the auth mode's credentials sets `auth_state` to `configured` (or `missing_credentials`
/// while a required one is unset). An unknown connection is a 404.
#[utoipa::path(
    post,
    path = "/api/marketplace/configure",
    tag = "marketplace",
    request_body = ConfigureRequest,
    responses((status = 200, body = ConnectionOut), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn configure(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ConfigureRequest>,
) -> ApiResult<Json<ConnectionOut>> {
    caller.require(Scope::Write)?;
    let id = Id::parse(IdKind::Connection, &request.integration_id)
        .map_err(|e| ApiError::validation("integration_id", e.to_string()))?;
    let connection = state.connections.configure(&caller.key.tenant_id, id.as_str(), &request.credentials).await?;
    Ok(Json(connection_out(&state, connection)))
}

/// Lists the tenant's connections, newest first (read scope)
///
/// Each connection shows its provider, auth mode and non-secret config, which credentials are set
/// (and when) and which required ones are missing, its `auth_state`, and its last success, error
/// and test. Credentials are never shown. `limit` is 1 to 100 (default 50); pass the previous
/// page's `next_cursor` as `cursor` to get the next page (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/marketplace/installed",
    tag = "marketplace",
    params(ConnectionPage),
    responses((status = 200, body = ListResponse<ConnectionOut>)),
    security(("api_key" = []))
)]
pub async fn list_installed(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ConnectionPage>,
) -> ApiResult<Json<ListResponse<ConnectionOut>>> {
    caller.require(Scope::Read)?;
    let page = params.to_page()?;
    let rows = state.connections.list(&caller.key.tenant_id, &page).await?;
    Ok(Json(ListResponse::from_rows(rows, &page, |c| c.id.to_string(), |c| connection_out(&state, c))))
}

/// Gets one connection (read scope)
///
/// Returns the connection as listed: provider, auth mode, non-secret config, which credentials are
/// set and which are missing, `auth_state`, recent outcomes and, for an OAuth2 connection, what is
/// known of its tokens (never the tokens). An unknown `conn_…` id is a 404.
#[utoipa::path(
    get,
    path = "/api/marketplace/installed/{connection_id}",
    tag = "marketplace",
    params(("connection_id" = String, Path, description = "`conn_…`")),
    responses((status = 200, body = ConnectionOut), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_installed(
    State(state): State<AppState>,
    caller: Caller,
    Path(connection_id): Path<String>,
) -> ApiResult<Json<ConnectionOut>> {
    caller.require(Scope::Read)?;
    let id = path_id(IdKind::Connection, &connection_id, "connection")?;
    let connection = state.connections.get(&caller.key.tenant_id, id.as_str()).await?;
    Ok(Json(connection_out(&state, connection)))
}

/// Uninstalls a connection and deletes its stored credentials (write scope)
///
/// For an OAuth2 connection whose provider has a revocation endpoint, the grant is first revoked at
/// the provider; this is best effort, and a provider that fails to answer does not keep the
/// connection alive. Answers 204 with no body; an unknown connection is a 404.
#[utoipa::path(
    delete,
    path = "/api/marketplace/installed/{connection_id}",
    tag = "marketplace",
    params(("connection_id" = String, Path, description = "`conn_…`")),
    responses((status = 204, description = "Uninstalled"), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn uninstall(
    State(state): State<AppState>,
    caller: Caller,
    Path(connection_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Write)?;
    let id = path_id(IdKind::Connection, &connection_id, "connection")?;
    state.connections.uninstall(&caller.key.tenant_id, id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}
