//! `catalog list|show` and `connections install|configure|test|list|rm`.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Api, ApiArgs, path_segment, print_json, print_table, text};

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// List the providers that can be installed, most installed first
    List {
        /// Only this category (communication, development, crm, payments, …)
        #[arg(long)]
        category: Option<String>,
        /// Words that must all appear in the name or description
        #[arg(long)]
        search: Option<String>,
        /// popularity, name or category
        #[arg(long, default_value = "popularity")]
        sort: String,
    },
    /// Show a provider: its auth modes and credentials, its install form and its actions
    Show {
        /// The provider's name, e.g. github
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Install a provider as a connection
    Install(InstallArgs),
    /// Set or rotate credentials; fields not given keep their values
    Configure {
        /// The connection (conn_…)
        id: String,
        /// A credential, NAME=VALUE, or NAME=- to read the value from standard input; repeatable
        #[arg(long = "credential", value_name = "NAME=VALUE", required = true)]
        credentials: Vec<String>,
    },
    /// Start connecting an OAuth2 connection: prints the URL to open in a browser
    Connect {
        /// The connection (conn_…)
        id: String,
        /// A scope to request besides the provider's; repeatable
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Where the browser goes afterwards (with connection_id and status)
        #[arg(long)]
        return_url: Option<String>,
    },
    /// Run the provider's health check; exits non-zero when it fails
    Test {
        /// The connection (conn_…)
        id: String,
    },
    /// List connections, newest first
    List,
    /// Uninstall a connection and delete its credentials
    Rm {
        /// The connection (conn_…)
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The provider's name in the catalog
    template: String,
    /// A name for the connection [default: the provider's]
    #[arg(long)]
    name: Option<String>,
    /// A value of the provider's install form (`config_overrides`), NAME=VALUE; repeatable
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
    /// Which auth mode to use when the provider offers several
    #[arg(long)]
    auth_mode: Option<String>,
    /// A credential, NAME=VALUE, or NAME=- to read the value from standard input; repeatable
    #[arg(long = "credential", value_name = "NAME=VALUE")]
    credentials: Vec<String>,
}

pub async fn catalog(args: &ApiArgs, command: CatalogCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        CatalogCommand::List { category, search, sort } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("sort", &sort);
            if let Some(category) = &category {
                query.append_pair("category", category);
            }
            if let Some(search) = &search {
                query.append_pair("search", search);
            }
            let providers = api.list(&format!("/api/marketplace/integrations?{}", query.finish()), usize::MAX).await?;
            if args.json {
                print_json(&providers);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = providers
                .items
                .iter()
                .map(|p| {
                    vec![
                        text(&p["name"]),
                        joined(&p["categories"]),
                        joined(&p["auth_modes"]),
                        text(&p["installs"]),
                        text(&p["description"]),
                    ]
                })
                .collect();
            print_table(&["NAME", "CATEGORIES", "AUTH", "INSTALLS", "DESCRIPTION"], &rows);
        }
        CatalogCommand::Show { name } => {
            let detail = api.get(&format!("/api/marketplace/integrations/{}", path_segment(&name)?)).await?;
            if args.json {
                print_json(&detail);
                return Ok(());
            }
            print_detail(&detail);
        }
    }
    Ok(())
}

fn joined(list: &Value) -> String {
    list.as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(",")
}

fn print_detail(detail: &Value) {
    println!("{} ({})", text(&detail["display_name"]), text(&detail["name"]));
    println!("{}", text(&detail["description"]));
    if let Some(docs) = detail["docs_url"].as_str() {
        println!("Docs: {docs}");
    }
    println!("Categories: {}", joined(&detail["categories"]));
    println!("\nAuth modes (credentials for `connections configure`):");
    for auth in detail["auth"].as_array().into_iter().flatten() {
        let fields: Vec<String> = auth["credential_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let optional = if f["required"] == true { "" } else { ", optional" };
                format!("{} ({}{optional})", text(&f["name"]), text(&f["label"]))
            })
            .collect();
        let fields = if fields.is_empty() { "none".to_string() } else { fields.join("; ") };
        println!("  {:<28} {fields}", text(&auth["mode"]));
    }
    let form = detail["connection_config"].as_array().cloned().unwrap_or_default();
    if !form.is_empty() {
        println!("\nInstall form (`connections install --set NAME=VALUE`):");
        let rows: Vec<Vec<String>> = form
            .iter()
            .map(|f| {
                let mut notes = Vec::new();
                if f["required"] == true {
                    notes.push("required".to_string());
                }
                if f["secret"] == true {
                    notes.push("secret".to_string());
                }
                if !f["default"].is_null() {
                    notes.push(format!("default {}", text(&f["default"])));
                }
                vec![text(&f["name"]), text(&f["type"]), notes.join(", "), text(&f["label"])]
            })
            .collect();
        print_table(&["  FIELD", "TYPE", "NOTES", "LABEL"], &indent(rows));
    }
    println!("\nActions (`POST /api/integrations/{{id}}/actions/{{name}}`):");
    let rows: Vec<Vec<String>> = detail["actions_detail"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| vec![text(&a["name"]), text(&a["method"]), text(&a["path"]), text(&a["description"])])
        .collect();
    print_table(&["  NAME", "METHOD", "PATH", "DESCRIPTION"], &indent(rows));
}

fn indent(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    for row in &mut rows {
        if let Some(first) = row.first_mut() {
            first.insert_str(0, "  ");
        }
    }
    rows
}

/// `NAME=VALUE` pairs; `NAME=-` reads the value from standard input (one line each), so
/// secrets need not appear in the shell history.
fn credentials(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut stdin = std::io::stdin().lock();
    let mut out = Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else { bail!("--credential {pair:?}: expected NAME=VALUE") };
        let value = if value == "-" {
            let mut line = String::new();
            stdin.read_line(&mut line).context("reading a credential from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        } else {
            value.to_string()
        };
        out.insert(name.to_string(), Value::String(value));
    }
    Ok(out)
}

/// Form values typed as the provider's form says (integers and booleans as JSON numbers and
/// booleans); a name the form lacks is sent as text and the server names it.
fn config_values(pairs: &[String], form: &Value) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((name, raw)) = pair.split_once('=') else { bail!("--set {pair:?}: expected NAME=VALUE") };
        let kind = form
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == name)
            .and_then(|f| f["type"].as_str())
            .unwrap_or("string");
        let value = match kind {
            "integer" => json!(raw.parse::<i64>().with_context(|| format!("--set {name}: not an integer"))?),
            "boolean" => json!(raw.parse::<bool>().with_context(|| format!("--set {name}: not true or false"))?),
            _ => json!(raw),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

fn print_connection(connection: &Value) {
    println!("{} {} ({})", text(&connection["id"]), text(&connection["name"]), text(&connection["provider"]));
    println!("  auth: {} ({})", text(&connection["auth_mode"]), text(&connection["auth_state"]));
    let missing = joined(&connection["credentials_missing"]);
    if !missing.is_empty() {
        println!("  credentials still needed: {missing}");
    }
}

pub async fn connections(args: &ApiArgs, command: ConnectionsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        ConnectionsCommand::Install(install) => {
            let detail =
                api.get(&format!("/api/marketplace/integrations/{}", path_segment(&install.template)?)).await?;
            let mut body = json!({
                "template_name": install.template,
                "config_overrides": config_values(&install.settings, &detail["connection_config"])?,
            });
            if let Some(name) = &install.name {
                body["custom_name"] = json!(name);
            }
            if let Some(mode) = &install.auth_mode {
                body["auth_mode"] = json!(mode);
            }
            if !install.credentials.is_empty() {
                body["credentials"] = Value::Object(credentials(&install.credentials)?);
            }
            let connection = api.call(Method::POST, "/api/marketplace/install", Some(&body), &[]).await?;
            if args.json {
                print_json(&connection);
            } else {
                print_connection(&connection);
            }
        }
        ConnectionsCommand::Configure { id, credentials: pairs } => {
            let body = json!({"integration_id": path_segment(&id)?, "credentials": credentials(&pairs)?});
            let connection = api.call(Method::POST, "/api/marketplace/configure", Some(&body), &[]).await?;
            if args.json {
                print_json(&connection);
            } else {
                print_connection(&connection);
            }
        }
        ConnectionsCommand::Connect { id, scopes, return_url } => {
            let path = format!("/api/integrations/{}/oauth/start", path_segment(&id)?);
            let mut body = json!({"scopes": scopes});
            if let Some(url) = return_url {
                body["return_url"] = json!(url);
            }
            let started = api.call(Method::POST, &path, Some(&body), &[]).await?;
            if args.json {
                print_json(&started);
            } else {
                println!("Open this URL in a browser before {}:", text(&started["expires_at"]));
                println!("{}", text(&started["authorization_url"]));
            }
        }
        ConnectionsCommand::Test { id } => {
            let path = format!("/api/integrations/{}/test", path_segment(&id)?);
            let outcome = api.call(Method::POST, &path, None, &[]).await?;
            if args.json {
                print_json(&outcome);
            } else if outcome["ok"] == true {
                println!("ok: the provider answered {} in {:.1} ms", text(&outcome["status"]), latency(&outcome));
            } else {
                println!("failed after {:.1} ms: {}", latency(&outcome), text(&outcome["error"]));
            }
            if outcome["ok"] != true {
                bail!("the health check of {id} failed");
            }
        }
        ConnectionsCommand::List => {
            let connections = api.list("/api/marketplace/installed", usize::MAX).await?;
            if args.json {
                print_json(&connections);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = connections
                .items
                .iter()
                .map(|c| {
                    vec![
                        text(&c["id"]),
                        text(&c["provider"]),
                        text(&c["name"]),
                        text(&c["auth_mode"]),
                        text(&c["auth_state"]),
                        text(&c["last_success_at"]),
                    ]
                })
                .collect();
            print_table(&["ID", "PROVIDER", "NAME", "AUTH", "STATE", "LAST SUCCESS"], &rows);
        }
        ConnectionsCommand::Rm { id } => {
            let path = format!("/api/marketplace/installed/{}", path_segment(&id)?);
            api.call(Method::DELETE, &path, None, &[]).await?;
            println!("Uninstalled {id}");
        }
    }
    Ok(())
}

fn latency(outcome: &Value) -> f64 {
    outcome["latency_ms"].as_f64().unwrap_or(0.0)
}
