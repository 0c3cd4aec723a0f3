//! One module per resource. Each handler is annotated for the OpenAPI document; the router
//! in `lib.rs` collects them through `utoipa_axum`, so a route cannot exist undocumented.

pub mod api_keys;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod health;
pub mod inbound;
pub mod integrations;
pub mod marketplace;
pub mod messages;
pub mod tenants;

use serde::{Deserialize, Deserializer, Serialize};
use switchboard_core::{Id, IdKind};
use switchboard_store::Page;
use utoipa::{IntoParams, ToSchema};

use crate::problem::{ApiError, ApiResult};

pub const MAX_PAGE: u32 = 100;
pub const DEFAULT_PAGE: u32 = 50;

/// Cursor pagination parameters: a page size and the cursor of the page before (an id of the
/// list's kind).
#[derive(Debug, Deserialize)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Declares the query parameters of a list of ids of one kind: `limit`, and a `cursor` that
/// is such an id, documented with the pattern the server parses (so a client generator's
/// cursor is one the server takes).
macro_rules! page_query {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $pattern:literal) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// Items per page, 1 to 100 (default 50).
            #[param(minimum = 1, maximum = 100)]
            pub limit: Option<u32>,
            /// `next_cursor` of the previous page (empty: the first page).
            #[param(pattern = $pattern)]
            pub cursor: Option<String>,
        }

        impl $name {
            pub fn to_page(&self) -> ApiResult<Page> {
                PageParams { limit: self.limit, cursor: self.cursor.clone() }.to_page($kind)
            }
        }
    };
}

page_query!(
    /// A page of tenants.
    TenantPage, IdKind::Tenant, r"^(ten_[0-7][0-9a-hjkmnp-tv-z]{25})?$"
);
page_query!(
    /// A page of API keys.
    ApiKeyPage, IdKind::ApiKey, r"^(key_[0-7][0-9a-hjkmnp-tv-z]{25})?$"
);
page_query!(
    /// A page of event types.
    EventTypePage, IdKind::EventType, r"^(et_[0-7][0-9a-hjkmnp-tv-z]{25})?$"
);
page_query!(
    /// A page of endpoints.
    EndpointPage, IdKind::Endpoint, r"^(ep_[0-7][0-9a-hjkmnp-tv-z]{25})?$"
);
page_query!(
    /// A page of connections.
    ConnectionPage, IdKind::Connection, r"^(conn_[0-7][0-9a-hjkmnp-tv-z]{25})?$"
);

impl PageParams {
    /// Checks the parameters; the store is asked for one extra row to know whether another
    /// page exists.
    pub fn to_page(&self, kind: IdKind) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::malformed("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        // An empty cursor is the first page, as if it were absent.
        let before = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(cursor) => {
                Some(Id::parse(kind, cursor).map_err(|e| ApiError::malformed("cursor", e.to_string()))?.to_string())
            }
            None => None,
        };
        Ok(Page { limit: limit + 1, before })
    }
}

/// A page of results, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    /// Trims the extra row fetched by [`PageParams::to_page`] and derives the cursor.
    pub fn from_rows<R>(mut rows: Vec<R>, page: &Page, id_of: impl Fn(&R) -> String, to_api: impl Fn(R) -> T) -> Self {
        let more = rows.len() > (page.limit - 1) as usize;
        rows.truncate((page.limit - 1) as usize);
        let next_cursor = if more { rows.last().map(&id_of) } else { None };
        Self { data: rows.into_iter().map(to_api).collect(), next_cursor }
    }
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Parses a path id of the expected kind; anything else is simply not found.
pub fn path_id(kind: IdKind, raw: &str, what: &str) -> ApiResult<Id> {
    Id::parse(kind, raw).map_err(|_| ApiError::not_found(what))
}
