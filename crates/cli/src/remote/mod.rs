//! Commands that talk to a running server through its API: `endpoints`, `events`,
//! `deliveries` here, `catalog` and `connections` in `connections.rs`. They are thin: every
//! rule lives in the server, and its problem documents are shown as they come.

mod connections;

pub use connections::{CatalogCommand, ConnectionsCommand, catalog, connections};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Where the API is and who is calling it.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Base URL of a running switchboard
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// API key (sk_…)
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Subscribe a URL to events; prints the signing secret once
    Add(AddEndpoint),
    /// List endpoints
    List,
    /// Delete an endpoint; its pending messages are not delivered
    Rm {
        /// The endpoint id (ep_…)
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AddEndpoint {
    /// Where messages are POSTed
    #[arg(value_name = "URL")]
    pub endpoint_url: String,
    /// An event type or `prefix.*` pattern; repeat for several [default: every type]
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// A jq expression that must yield true for the endpoint to receive the event
    #[arg(long)]
    pub filter: Option<String>,
    /// A jq expression whose result is sent as the body
    #[arg(long)]
    pub transform: Option<String>,
    /// A static header, NAME=VALUE; repeat for several
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// At most this many deliveries per second
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Deliver one message at a time, in event order
    #[arg(long)]
    pub fifo: bool,
    /// Sign with Ed25519 (v1a) instead of HMAC-SHA256 (v1)
    #[arg(long)]
    pub asymmetric: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Publish an event; it fans out to every endpoint that subscribes to it
    Send {
        /// The event type (registered with the API first)
        event_type: String,
        /// The payload: JSON text, or @FILE to read it from a file [default: {}]
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
        /// Makes a retried send create the event only once
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List the messages of an endpoint or of an event, newest first
    List {
        /// The endpoint's messages (ep_…)
        #[arg(long, conflicts_with = "event", required_unless_present = "event")]
        endpoint: Option<String>,
        /// The messages an event fanned out to (evt_…)
        #[arg(long)]
        event: Option<String>,
        /// pending, succeeded or failed
        #[arg(long)]
        status: Option<String>,
        /// At most this many messages
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send a message again now, with a fresh retry schedule
    Resend {
        /// The message id (msg_…)
        id: String,
    },
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let Some(key) = args.api_key.clone().filter(|k| !k.is_empty()) else {
            bail!("an API key is needed: --api-key or SWITCHBOARD_API_KEY");
        };
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
        Ok(Self { http, base: args.url.trim_end_matches('/').to_string(), key })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("calling {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        if !status.is_success() {
            bail!("{}", describe_problem(status, &text));
        }
        if status == StatusCode::NO_CONTENT || text.is_empty() {
            return Ok(Reply { raw: "null".into(), value: Value::Null });
        }
        let value = serde_json::from_str(&text).context("the answer is not JSON")?;
        Ok(Reply { raw: text, value })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// Every item of a listing, following cursors, up to `limit`.
    async fn list(&self, path: &str, limit: usize) -> anyhow::Result<Listing> {
        #[derive(serde::Deserialize)]
        struct Page {
            data: Vec<Box<RawValue>>,
            next_cursor: Option<String>,
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut listing = Listing::default();
        while listing.raw.len() < limit {
            let page_size = (limit - listing.raw.len()).min(100);
            let mut page_path = format!("{path}{separator}limit={page_size}");
            if let Some(cursor) = &listing.next_cursor {
                page_path.push_str(&format!("&cursor={cursor}"));
            }
            let page: Page =
                serde_json::from_str(&self.get(&page_path).await?.raw).context("the answer is not a page")?;
            for item in &page.data {
                listing.items.push(serde_json::from_str(item.get())?);
            }
            listing.raw.extend(page.data);
            listing.next_cursor = page.next_cursor;
            if listing.next_cursor.is_none() {
                break;
            }
        }
        Ok(listing)
    }
}

/// An answer of the API: its JSON as sent (what `--json` prints) and as a value.
struct Reply {
    raw: String,
    value: Value,
}

impl std::ops::Deref for Reply {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

/// The items of a listing across its pages, each as the API sent it, and the cursor of what
/// was left unread (`None` when everything was read).
#[derive(Default)]
struct Listing {
    items: Vec<Value>,
    raw: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

/// JSON as the API wrote it.
trait AsSent {
    fn as_sent(&self) -> String;
}

impl AsSent for Reply {
    fn as_sent(&self) -> String {
        self.raw.clone()
    }
}

impl AsSent for Listing {
    /// The API's list shape over every page read: `{"data": [...]}`, with `next_cursor`
    /// when more was left unread.
    fn as_sent(&self) -> String {
        let items: Vec<&str> = self.raw.iter().map(|item| item.get()).collect();
        match &self.next_cursor {
            Some(cursor) => {
                let cursor = serde_json::to_string(cursor).expect("a cursor serialises");
                format!("{{\"data\":[{}],\"next_cursor\":{cursor}}}", items.join(","))
            }
            None => format!("{{\"data\":[{}]}}", items.join(",")),
        }
    }
}

/// "422 Unprocessable Entity: url: …" from a problem document (or whatever the body was).
fn describe_problem(status: StatusCode, body: &str) -> String {
    let Ok(problem) = serde_json::from_str::<Value>(body) else {
        return format!("{status}: {}", body.chars().take(500).collect::<String>());
    };
    let mut text = format!("{status}: {}", problem["detail"].as_str().or(problem["title"].as_str()).unwrap_or(""));
    // One error is already the detail; several are listed under it.
    let errors = problem["errors"].as_array().filter(|errors| errors.len() > 1);
    for error in errors.into_iter().flatten() {
        text.push_str(&format!(
            "\n  {}: {}",
            error["field"].as_str().unwrap_or("?"),
            error["detail"].as_str().unwrap_or("")
        ));
    }
    text
}

/// Ids go into paths: refuse anything that could change the path.
fn path_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("{id:?} is not an id");
    }
    Ok(id)
}

/// `--json`: the API's JSON as it was sent, one document per line.
fn print_json(answer: &impl AsSent) {
    println!("{}", answer.as_sent());
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn endpoints(args: &ApiArgs, command: EndpointsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        EndpointsCommand::Add(add) => {
            let mut headers = serde_json::Map::new();
            for header in &add.headers {
                let Some((name, value)) = header.split_once('=') else {
                    bail!("--header {header:?}: expected NAME=VALUE");
                };
                headers.insert(name.to_string(), Value::String(value.to_string()));
            }
            let mut body = json!({
                "url": add.endpoint_url,
                "event_types": add.event_types,
                "description": add.description,
                "headers": headers,
                "fifo": add.fifo,
                "signing": if add.asymmetric { "asymmetric" } else { "symmetric" },
            });
            for (field, value) in [("filter", &add.filter), ("transform", &add.transform)] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            if let Some(rate) = add.rate_limit {
                body["rate_limit_per_second"] = json!(rate);
            }
            let created = api.call(Method::POST, "/api/integrations/webhooks", Some(&body), &[]).await?;
            if args.json {
                print_json(&created);
            } else {
                println!("Created {} for {}", text(&created["id"]), text(&created["url"]));
                println!("Signing secret (shown once): {}", text(&created["secret"]));
                if let Some(public_key) = created["public_key"].as_str() {
                    println!("Public key for receivers: {public_key}");
                }
            }
        }
        EndpointsCommand::List => {
            let endpoints = api.list("/api/integrations/webhooks", usize::MAX).await?;
            if args.json {
                print_json(&endpoints);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = endpoints
                .items
                .iter()
                .map(|e| {
                    let types: Vec<String> = e["event_types"].as_array().into_iter().flatten().map(text).collect();
                    let state = match (e["enabled"].as_bool(), e["disabled_reason"].as_str()) {
                        (Some(true), _) => "enabled".to_string(),
                        (_, Some(reason)) => format!("disabled ({reason})"),
                        _ => "disabled".to_string(),
                    };
                    let types = if types.is_empty() { "*".to_string() } else { types.join(",") };
                    vec![text(&e["id"]), state, types, text(&e["url"])]
                })
                .collect();
            print_table(&["ID", "STATE", "EVENT TYPES", "URL"], &rows);
        }
        EndpointsCommand::Rm { id } => {
            let path = format!("/api/integrations/webhooks/{}", path_segment(&id)?);
            api.call(Method::DELETE, &path, None, &[]).await?;
            println!("Deleted {id}");
        }
    }
    Ok(())
}

pub async fn events(args: &ApiArgs, command: EventsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let EventsCommand::Send { event_type, data, idempotency_key } = command;
    let payload: Value = match data.as_deref() {
        None => json!({}),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
                None => text.to_string(),
            };
            serde_json::from_str(&text).context("--data is not JSON")?
        }
    };
    let body = json!({"event_type": event_type, "payload": payload});
    let headers: Vec<(&str, &str)> = idempotency_key.iter().map(|key| ("Idempotency-Key", key.as_str())).collect();
    let event = api.call(Method::POST, "/api/events", Some(&body), &headers).await?;
    if args.json {
        print_json(&event);
    } else {
        println!("{}", text(&event["id"]));
    }
    Ok(())
}

pub async fn deliveries(args: &ApiArgs, command: DeliveriesCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        DeliveriesCommand::List { endpoint, event, status, limit } => {
            let mut path = match (&endpoint, &event) {
                (Some(id), _) => format!("/api/integrations/webhooks/{}/messages", path_segment(id)?),
                (None, Some(id)) => format!("/api/events/{}/messages", path_segment(id)?),
                (None, None) => bail!("--endpoint or --event is needed"),
            };
            if let Some(status) = &status {
                path.push_str(&format!("?status={}", path_segment(status)?));
            }
            let messages = api.list(&path, limit).await?;
            if args.json {
                print_json(&messages);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = messages
                .items
                .iter()
                .map(|m| {
                    vec![
                        text(&m["id"]),
                        text(&m["status"]),
                        text(&m["attempts"]),
                        text(&m["last_status_code"]),
                        text(&m["event_id"]),
                        text(&m["endpoint_id"]),
                        text(&m["next_attempt_at"]),
                    ]
                })
                .collect();
            print_table(&["MESSAGE", "STATUS", "ATTEMPTS", "LAST HTTP", "EVENT", "ENDPOINT", "NEXT ATTEMPT"], &rows);
        }
        DeliveriesCommand::Resend { id } => {
            let path = format!("/api/messages/{}/resend", path_segment(&id)?);
            let message = api.call(Method::POST, &path, None, &[]).await?;
            if args.json {
                print_json(&message);
            } else {
                println!("Queued {} again ({})", text(&message["id"]), text(&message["status"]));
            }
        }
    }
    Ok(())
}
