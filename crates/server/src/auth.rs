//! API-key authentication (`Authorization: Bearer sk_…`), scope checks and per-key rate limits.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use switchboard_core::api_key;
use switchboard_store::{ApiKey, Scope};

use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    /// Keys of the operator tenant may manage other tenants.
    pub is_operator: bool,
}

impl Caller {
    pub fn tenant_id(&self) -> &str {
        self.key.tenant_id.as_str()
    }

    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.key.scope.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "This API key has the {} scope; this request needs {scope}",
                self.key.scope
            )))
        }
    }

    pub fn require_operator(&self) -> ApiResult<()> {
        self.require(Scope::Admin)?;
        if self.is_operator {
            Ok(())
        } else {
            Err(ApiError::forbidden("Only admin keys of the operator tenant may manage tenants"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header_value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("An API key is required: send Authorization: Bearer sk_…"))?;
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = header_value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| t.starts_with(api_key::TOKEN_PREFIX))
            .ok_or_else(|| ApiError::unauthorized("The Authorization header must be Bearer sk_…"))?;
        let (key, is_operator) = state
            .lookups
            .authenticate(&*state.store, &api_key::hash(token))
            .await?
            .filter(|(key, _)| key.is_usable_at(state.clock.now()))
            .ok_or_else(|| ApiError::unauthorized("The API key is invalid, revoked or expired"))?;
        if let Some(limiter) = &state.limiter {
            limiter.take(key.id.as_str()).map_err(|wait| ApiError::rate_limited(wait.as_secs().max(1)))?;
        }
        Ok(Caller { key, is_operator })
    }
}
