//! The manifest: everything Switchboard knows about one provider, declared in one YAML file.
//!
//! These types are the format. `connectors/manifest.schema.json` is generated from them (a
//! test keeps the two equal), and `load.rs` turns YAML into them with precise errors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The provider's key: lower case letters, digits, `-` and `_`; also the file name.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{1,62}$"))]
    pub name: String,
    pub display_name: String,
    pub description: String,
    #[schemars(length(min = 1))]
    pub categories: Vec<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_url: Option<String>,
    /// One way to authenticate, or several a connection chooses from at install.
    #[schemars(with = "OneOrMany<Auth>")]
    pub auth: Vec<Auth>,
    /// The form a connection fills in at install (e.g. a Jira subdomain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_config: Vec<ConfigField>,
    /// A template over `config` and `api_version`, e.g. `https://{{ config.subdomain }}.atlassian.net`.
    pub base_url: String,
    /// Headers sent on every call; values are templates over `config` and `api_version`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Named pagination styles that list actions refer to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pagination: BTreeMap<String, Pagination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// How the provider reports an error inside a successful HTTP response (Slack's `ok: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<InboundWebhooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<ApiVersion>,
    /// Caching of GET responses (proxy and actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

/// Accepts a single value where a list is expected (for the schema only; the loader
/// normalises).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Communication,
    Productivity,
    Development,
    Crm,
    Commerce,
    Payments,
    Cms,
    Analytics,
    Storage,
    Marketing,
    Gaming,
    Visualization,
    Calendar,
    Support,
    Custom,
}

impl Category {
    /// Every category, in the order the catalog documents them.
    pub const ALL: [Category; 15] = [
        Category::Communication,
        Category::Productivity,
        Category::Development,
        Category::Crm,
        Category::Commerce,
        Category::Payments,
        Category::Cms,
        Category::Analytics,
        Category::Storage,
        Category::Marketing,
        Category::Gaming,
        Category::Visualization,
        Category::Calendar,
        Category::Support,
        Category::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Communication => "communication",
            Category::Productivity => "productivity",
            Category::Development => "development",
            Category::Crm => "crm",
            Category::Commerce => "commerce",
            Category::Payments => "payments",
            Category::Cms => "cms",
            Category::Analytics => "analytics",
            Category::Storage => "storage",
            Category::Marketing => "marketing",
            Category::Gaming => "gaming",
            Category::Visualization => "visualization",
            Category::Calendar => "calendar",
            Category::Support => "support",
            Category::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Auth {
    /// Authorization code grant; tokens come from the connect flow.
    Oauth2(OAuth2),
    /// The client credentials grant: the connection holds a client id and secret.
    Oauth2ClientCredentials(ClientCredentials),
    ApiKey(ApiKey),
    /// A static token sent as `Authorization: Bearer <token>`.
    Bearer(Bearer),
    /// HTTP Basic with a username and password (or e-mail and API token).
    Basic(Basic),
    None,
}

impl Auth {
    pub fn mode(&self) -> &'static str {
        match self {
            Auth::Oauth2(_) => "oauth2",
            Auth::Oauth2ClientCredentials(_) => "oauth2_client_credentials",
            Auth::ApiKey(_) => "api_key",
            Auth::Bearer(_) => "bearer",
            Auth::Basic(_) => "basic",
            Auth::None => "none",
        }
    }

    /// The credentials a connection using this mode must (or may) hold.
    pub fn credential_fields(&self) -> Vec<CredentialField> {
        let field = |name: &str, label: &str, required: bool| CredentialField {
            name: name.to_string(),
            label: label.to_string(),
            required,
        };
        match self {
            Auth::Oauth2(_) => vec![
                field("client_id", "Client ID", true),
                field("client_secret", "Client secret", true),
                field("access_token", "Access token (set by the connect flow)", false),
                field("refresh_token", "Refresh token (set by the connect flow)", false),
            ],
            Auth::Oauth2ClientCredentials(_) => {
                vec![field("client_id", "Client ID", true), field("client_secret", "Client secret", true)]
            }
            Auth::ApiKey(key) => vec![field("api_key", key.label.as_deref().unwrap_or("API key"), true)],
            Auth::Bearer(bearer) => vec![field("token", bearer.label.as_deref().unwrap_or("Token"), true)],
            Auth::Basic(basic) => vec![
                field("username", basic.username_label.as_deref().unwrap_or("Username"), true),
                field("password", basic.password_label.as_deref().unwrap_or("Password"), true),
            ],
            Auth::None => Vec::new(),
        }
    }
}

/// One credential of an auth mode, as the marketplace shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CredentialField {
    pub name: String,
    pub label: String,
    pub required: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub authorization_url: String,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "space")]
    pub scope_separator: String,
    /// PKCE with S256; on unless the provider refuses it.
    #[serde(default = "yes")]
    pub pkce: bool,
    #[serde(default)]
    pub token_auth_method: TokenAuthMethod,
    /// Extra parameters on the authorization URL (Google's `access_type=offline`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorization_params: BTreeMap<String, String>,
    /// Scopes for a user token besides the app's (Slack's `user_scope`), and the parameter
    /// that carries them; a connection may add more when it connects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_scope_param: Option<String>,
    /// Extra parameters on token requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_params: BTreeMap<String, String>,
    /// The authorization server's issuer identifier (RFC 8414), e.g.
    /// `https://accounts.google.com`. A redirect that carries an `iss` parameter (RFC 9207)
    /// must carry exactly this, or it is refused before its code is used: the defence against
    /// a mix-up of authorization servers (RFC 9700 §4.4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The server puts `iss` in every redirect (its metadata's
    /// `authorization_response_iss_parameter_supported`): a redirect without it is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authorization_response_iss_parameter_supported: bool,
    /// A reconnect revokes the grant it replaced. Off for providers whose revocation ends
    /// every grant the user gave the app (Google's does), which would end the new one too.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub revoke_replaced_grant: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    pub token_url: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "space")]
    pub scope_separator: String,
    #[serde(default)]
    pub token_auth_method: TokenAuthMethod,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// Client id and secret in an `Authorization: Basic` header (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Where the key goes.
    #[serde(rename = "in")]
    pub location: KeyLocation,
    /// The header or query parameter name.
    pub name: String,
    /// Put before the key, e.g. `Token ` or `Bearer `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// How the form names the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bearer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_label: Option<String>,
}

/// One field of the install form.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,62}$"))]
    pub name: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: ConfigType,
    #[serde(default)]
    pub required: bool,
    /// Secret values are sealed with the credentials and never shown again.
    #[serde(default)]
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A regular expression a string value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The allowed values of an `enum` field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigType {
    #[default]
    String,
    Integer,
    Boolean,
    /// An http(s) URL; a connection's base URL built from it passes the SSRF guard.
    Url,
    Enum,
}

/// The provider's documented quota, and how its responses report the remaining budget.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per `per_seconds`, per connection unless `scope` says otherwise.
    pub requests: u32,
    pub per_seconds: u32,
    #[serde(default)]
    pub scope: RateLimitScope,
    #[serde(default = "retry_after")]
    pub retry_after_header: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_header: Option<String>,
    #[serde(default)]
    pub reset_format: ResetFormat,
    /// Statuses that mean "rate limited" besides 429 when the remaining budget is zero
    /// (GitHub answers 403).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_limited_statuses: Vec<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    #[default]
    Connection,
    Provider,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetFormat {
    /// Unix time in seconds (GitHub's `X-RateLimit-Reset`).
    #[default]
    EpochSeconds,
    /// Seconds from now.
    DeltaSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// The response carries an opaque cursor for the next page (Slack, HubSpot, Google), or
    /// the next page starts after the last item's id (Stripe's `starting_after`).
    Cursor {
        cursor_param: String,
        /// JSON pointer to the next cursor; absent or empty means the last page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
        /// JSON pointer into the last item whose value is the next cursor (Stripe: `/id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor_from_last_item: Option<String>,
        /// JSON pointer to a boolean saying whether more pages exist.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        has_more: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_param: Option<String>,
        #[serde(default = "page_size")]
        page_size: u32,
    },
    /// `?offset=…&limit=…` (Jira's `startAt`/`maxResults`).
    Offset {
        offset_param: String,
        limit_param: String,
        #[serde(default = "page_size")]
        page_size: u32,
        /// JSON pointer to the total number of items, when the provider reports it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<String>,
    },
    /// `?page=…&per_page=…`.
    Page {
        page_param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_param: Option<String>,
        #[serde(default = "page_size")]
        page_size: u32,
        #[serde(default = "one")]
        first_page: u32,
    },
    /// RFC 8288 `Link: <…>; rel="next"` (GitHub).
    LinkHeader {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_param: Option<String>,
        #[serde(default = "page_size")]
        page_size: u32,
    },
}

impl Pagination {
    pub fn style(&self) -> &'static str {
        match self {
            Pagination::Cursor { .. } => "cursor",
            Pagination::Offset { .. } => "offset",
            Pagination::Page { .. } => "page",
            Pagination::LinkHeader { .. } => "link_header",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,62}$"))]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub method: Method,
    /// A template over `input` and `config`; values are percent-encoded as path segments.
    pub path: String,
    /// Query parameters; each value is a template, and a parameter whose template yields
    /// nothing is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// A JSON Schema the input must satisfy.
    #[serde(default = "object_schema")]
    pub input: Value,
    /// The JSON body: a value whose strings are templates. A string that is exactly one
    /// `{{ expression }}` keeps the expression's type. Without it, POST, PUT and PATCH send
    /// the input itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Send the body form-encoded instead of as JSON (Slack accepts both; Stripe wants forms).
    #[serde(default)]
    pub form: bool,
    /// JSON pointer selecting the result (the items, for a paginated action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The name of a pagination style; the action then returns every page's items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorShape {
    /// JSON pointer to a value that marks an error when it equals `equals`.
    pub pointer: String,
    pub equals: Value,
    /// JSON pointer to the provider's error code or message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the incoming-webhooks receiver needs to know about the provider's webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundWebhooks {
    pub scheme: SignatureScheme,
    /// For `generic_hmac`: how the provider signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<GenericSignature>,
    /// Where the event type lives: a JSON pointer into the body, `header:<Name>`, or
    /// `literal:<type>` for a provider that sends one kind of notification (Dropbox); or a
    /// list of them, the first that holds a value winning.
    pub event_type: Locations,
    /// Where the provider's event id lives: a JSON pointer into the body, or `header:<Name>`
    /// (or a list of them). Webhooks with the same id on a connection are one webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Locations>,
    /// For a provider that posts several events in one request (HubSpot): a JSON pointer to
    /// the array of events, `""` when the body is the array. Each item is stored as a webhook
    /// of its own, typed and de-duplicated by itself (`event_type` and `event_id` point into
    /// the item); a request is a duplicate only when every item was received before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// How bodies posted as `application/x-www-form-urlencoded` are read (Slack's slash
    /// commands and interactivity, Twilio). A form body is always read as a JSON object of
    /// its fields; this says which fields hold JSON and where, in such a body, the event
    /// type and id are when they differ from a JSON body's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<FormBodies>,
    /// How the provider proves the address before sending events to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handshakes: Vec<WebhookHandshake>,
}

impl InboundWebhooks {
    /// Where the event type is, in a body read as a form or not.
    pub fn event_type_locations(&self, form: bool) -> &Locations {
        self.form.as_ref().filter(|_| form).and_then(|f| f.event_type.as_ref()).unwrap_or(&self.event_type)
    }

    /// Where the provider's event id is, in a body read as a form or not.
    pub fn event_id_locations(&self, form: bool) -> Option<&Locations> {
        self.form.as_ref().filter(|_| form).and_then(|f| f.event_id.as_ref()).or(self.event_id.as_ref())
    }

    /// Form fields whose values are JSON.
    pub fn form_json_fields(&self) -> &[String] {
        self.form.as_ref().map_or(&[], |form| form.json_fields.as_slice())
    }
}

/// Form-encoded webhooks, read as an object of their fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormBodies {
    /// Fields whose value is JSON (Slack's `payload`), read as JSON within the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_fields: Vec<String>,
    /// Where the event type is in a form body, if not where `event_type` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<Locations>,
    /// Where the event id is in a form body, if not where `event_id` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Locations>,
}

/// One place a value may be, or several tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Locations {
    One(String),
    /// Tried in order; the first that holds a value wins.
    Many(Vec<String>),
}

impl Locations {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let many: &[String] = match self {
            Locations::One(one) => std::slice::from_ref(one),
            Locations::Many(many) => many,
        };
        many.iter().map(String::as_str)
    }

    /// Whether any location reads the body (rather than a header or a literal).
    pub fn reads_body(&self) -> bool {
        self.iter().any(|l| !l.starts_with("header:") && !l.starts_with("literal:"))
    }
}

impl std::fmt::Display for Locations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.iter().collect::<Vec<_>>().join(" or "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookHandshake {
    /// Slack Events API: a signed `url_verification` POST, answered with its challenge.
    SlackUrlVerification,
    /// Zoom: a signed `endpoint.url_validation` POST, answered with the plain token's HMAC.
    ZoomUrlValidation,
    /// Meta (Facebook, Instagram, WhatsApp): a `hub.challenge` GET carrying the verify token
    /// set as the connection's `webhook_verify_token` credential.
    MetaHubChallenge,
    /// Dropbox: a `challenge` GET, echoed.
    DropboxChallenge,
    /// Microsoft Graph: a POST with a `validationToken` query parameter, echoed.
    MicrosoftGraphValidation,
}

/// A provider's own HMAC signature.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericSignature {
    /// The header carrying the signature.
    pub header: String,
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// What is signed: a template over `{body}`, `{timestamp}`, `{method}`, `{url}` and
    /// `{header:Name}`.
    #[serde(default = "body_template")]
    pub signed: String,
    /// The header carrying the signing time, checked against the tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    #[default]
    Seconds,
    Milliseconds,
}

fn body_template() -> String {
    "{body}".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    Stripe,
    Github,
    Slack,
    Shopify,
    Twilio,
    StandardWebhooks,
    GenericHmac,
    /// The provider signs nothing (Microsoft Graph repeats a client state instead):
    /// connections take its webhooks only with `webhook_accept_unsigned` set.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub method: Method,
    pub path: String,
}

/// The provider's API version, pinnable per connection through the `api_version` config key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiVersion {
    pub default: String,
    /// Sent in this header; without it (and without `query`), templates use `api_version`
    /// as a path segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// How long a GET response is served from the cache.
    pub ttl_seconds: u32,
}

fn space() -> String {
    " ".to_string()
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn one() -> u32 {
    1
}

fn page_size() -> u32 {
    100
}

fn retry_after() -> String {
    "Retry-After".to_string()
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}
