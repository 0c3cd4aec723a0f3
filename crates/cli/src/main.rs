//! The `switchboard` binary.

mod bootstrap;
mod config;
mod remote;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_core::{Clock, SystemClock};
use tokio_util::sync::CancellationToken;

use config::{LogFormat, ServeArgs, Settings, StorageArgs};

// Request handling allocates many small, short-lived buffers; mimalloc serves them with
// less contention and fewer page faults than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: a self-hosted integration hub.
///
/// Every flag can also be set with an environment variable (shown in brackets) or in a TOML
/// file given with --config. Secrets come only from the environment: SWITCHBOARD_MASTER_KEY
/// (the master key ring, instead of the key file in the data dir) and SWITCHBOARD_ADMIN_KEY
/// (the first admin API key, used on the first start only).
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    storage: StorageArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the background workers (creates the data dir, database, master key and
    /// first admin key on the first start)
    Serve(Box<ServeArgs>),
    /// Bring the database schema up to date, then exit
    Migrate,
    /// Manage the master encryption keys
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Outgoing webhook endpoints of a running server (through its API)
    Endpoints {
        #[command(flatten)]
        api: remote::ApiArgs,
        #[command(subcommand)]
        action: remote::EndpointsCommand,
    },
    /// Publish events to a running server (through its API)
    Events {
        #[command(flatten)]
        api: remote::ApiArgs,
        #[command(subcommand)]
        action: remote::EventsCommand,
    },
    /// Webhook deliveries of a running server: list and resend (through its API)
    Deliveries {
        #[command(flatten)]
        api: remote::ApiArgs,
        #[command(subcommand)]
        action: remote::DeliveriesCommand,
    },
    /// The catalog of providers of a running server (through its API)
    Catalog {
        #[command(flatten)]
        api: remote::ApiArgs,
        #[command(subcommand)]
        action: remote::CatalogCommand,
    },
    /// Connections of a running server: install, configure, connect, test, list (through its API)
    Connections {
        #[command(flatten)]
        api: remote::ApiArgs,
        #[command(subcommand)]
        action: remote::ConnectionsCommand,
    },
    /// Run simulators of the providers' APIs (Slack, GitHub, Stripe, …) to try connections
    /// without real accounts; prints the flags that point `serve` at them
    Sandbox {
        /// Address to listen on
        #[arg(long, env = "SWITCHBOARD_SANDBOX_LISTEN", default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
}

impl Command {
    /// Commands that call a running server and print its answers.
    fn is_api_client(&self) -> bool {
        matches!(
            self,
            Command::Endpoints { .. }
                | Command::Events { .. }
                | Command::Deliveries { .. }
                | Command::Catalog { .. }
                | Command::Connections { .. }
        )
    }
}

/// An API client piped into `head` ends when `head` does, quietly, as Unix tools do, instead
/// of panicking on a write to a closed pipe (Rust ignores SIGPIPE; a server must, a client
/// should not).
fn end_quietly_when_the_reader_goes() {
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigHandler, Signal, signal};
        // SAFETY: the default disposition runs no handler code; no thread has started yet.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new master key in front of the key file and re-encrypt every stored secret with it
    Rotate,
}

fn main() -> std::process::ExitCode {
    // SQLite allocates through the C library, which would give each of its connection threads
    // a heap of its own; two heaps keep what it frees together, to be trimmed once idle.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    if cli.command.is_api_client() {
        end_quietly_when_the_reader_goes();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // API clients need neither the settings nor the logs of a server.
    match cli.command {
        Command::Endpoints { api, action } => return remote::endpoints(&api, action).await,
        Command::Events { api, action } => return remote::events(&api, action).await,
        Command::Deliveries { api, action } => return remote::deliveries(&api, action).await,
        Command::Catalog { api, action } => return remote::catalog(&api, action).await,
        Command::Connections { api, action } => return remote::connections(&api, action).await,
        Command::Sandbox { listen } => return sandbox(listen).await,
        _ => {}
    }
    let serve_args = match &cli.command {
        Command::Serve(args) => (**args).clone(),
        _ => ServeArgs::default(),
    };
    let settings = Settings::resolve(&cli.storage, &serve_args)?;
    init_logging(settings.log_format);
    match cli.command {
        Command::Serve(_) => serve(settings).await,
        Command::Migrate => {
            let store = bootstrap::open_store(&settings).await?;
            store.close().await;
            println!("Database is up to date ({}).", switchboard_store::redact_url(&settings.database_url));
            Ok(())
        }
        Command::Keys { action: KeysCommand::Rotate } => bootstrap::rotate_keys(&settings).await,
        Command::Endpoints { .. }
        | Command::Events { .. }
        | Command::Deliveries { .. }
        | Command::Catalog { .. }
        | Command::Connections { .. }
        | Command::Sandbox { .. } => unreachable!("handled above"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let secrets = Arc::new(bootstrap::load_or_create_key_ring(&settings)?);
    let store = bootstrap::open_store(&settings).await?;
    bootstrap::first_admin_key(&*store, clock.now()).await?;
    // jq worker processes start now, so the first filter does not wait for them.
    switchboard_jq::warm_up();

    let catalog = switchboard_connectors::Catalog::load(&settings.connectors_dirs).context("loading connectors")?;
    for name in settings.provider_urls.keys() {
        if catalog.get(name).is_none() {
            anyhow::bail!("provider_url: no provider named {name:?} in the catalog");
        }
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let address = listener.local_addr()?;
    let hub_settings = switchboard_hub::HubSettings {
        catalog: Arc::new(catalog),
        connectors: switchboard_connectors::ConnectorsConfig {
            url_overrides: settings.provider_urls.clone(),
            public_url: settings.public_url.clone().unwrap_or_else(|| format!("http://{address}")),
            ..Default::default()
        },
        webhooks: settings.webhooks.clone(),
        inbound: settings.inbound.clone(),
        egress: switchboard_egress::EgressConfig { policy: settings.egress_policy.clone(), ..Default::default() },
    };
    let hub = switchboard_hub::Hub::build(hub_settings, clock, store.clone(), secrets)?;
    let config = switchboard_server::ServerConfig {
        max_body_bytes: settings.max_body_bytes,
        request_timeout: settings.request_timeout,
        rate_limit_per_key: settings.rate_limit_per_key,
    };
    let state = switchboard_server::AppState::new(&hub, config);
    // Handlers go in before the address is announced, so a signal sent right after it is
    // never missed.
    let stop = CancellationToken::new();
    let mut signals = signals()?;
    let (draining, drain, stopping) = (state.clone(), settings.drain, stop.clone());
    tokio::spawn(async move {
        if wait_for_signal(&mut signals).await == Stop::Drain && !drain.is_zero() {
            // Serving goes on while load balancers notice /readyz failing; a second signal
            // cuts the drain short.
            draining.begin_drain();
            tracing::info!(drain_secs = drain.as_secs(), "draining: /readyz fails, answers close their connections");
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = wait_for_signal(&mut signals) => {}
            }
        }
        stopping.cancel();
    });
    tracing::info!(%address, database = %switchboard_store::redact_url(&settings.database_url), "switchboard is serving");
    println!("Listening on http://{address}");

    let server = tokio::spawn(switchboard_server::serve(listener, state, stop.clone().cancelled_owned()));
    let workers = hub.start(stop.clone());
    stop.cancelled().await;
    tracing::info!(
        deadline_secs = settings.shutdown_timeout.as_secs(),
        "shutting down: finishing in-flight requests and deliveries"
    );
    let deadline = tokio::time::Instant::now() + settings.shutdown_timeout;
    match tokio::time::timeout_at(deadline, server).await {
        Ok(result) => result.context("server task")?.context("serving")?,
        Err(_) => tracing::warn!("in-flight requests did not finish within the shutdown deadline"),
    }
    // Work not finished by then keeps its lease and is taken up again after it expires.
    let unfinished = workers.join(deadline).await;
    if !unfinished.is_empty() {
        tracing::warn!(?unfinished, "background work did not finish within the shutdown deadline");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the provider simulators until interrupted.
async fn sandbox(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use switchboard_sandbox::credentials as creds;
    let sandbox = switchboard_sandbox::Sandbox::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let url = sandbox.url();
    println!("Sandbox listening on {url}");
    println!();
    println!("Point a server at it (the sandbox answers on loopback, so allow it as a target):");
    let flags: Vec<String> =
        sandbox.url_overrides().iter().map(|(key, url)| format!("  --provider-url '{key}={url}'")).collect();
    println!("  switchboard serve --allow-target-networks 127.0.0.1/32 \\\n{}", flags.join(" \\\n"));
    println!();
    println!(
        "OAuth apps on every simulated provider: client_id={} client_secret={}",
        creds::OAUTH_CLIENT_ID,
        creds::OAUTH_CLIENT_SECRET
    );
    println!("Connections to the simulated providers, with credentials they accept (run against that server):");
    let rest = format!("{url}/rest");
    let game = format!("{url}/total-battle");
    for (provider, settings, credentials) in [
        ("slack", "--auth-mode bearer", vec![("token", creds::SLACK_BOT_TOKEN)]),
        ("github", "--auth-mode bearer", vec![("token", creds::GITHUB_TOKEN)]),
        ("stripe", "", vec![("token", creds::STRIPE_SECRET_KEY)]),
        ("hubspot", "--auth-mode bearer", vec![("token", creds::HUBSPOT_TOKEN)]),
        ("jira", "--set subdomain=acme", vec![("username", creds::JIRA_EMAIL), ("password", creds::JIRA_API_TOKEN)]),
        (
            "google-calendar",
            "",
            vec![
                ("client_id", creds::OAUTH_CLIENT_ID),
                ("client_secret", creds::OAUTH_CLIENT_SECRET),
                ("access_token", creds::GOOGLE_ACCESS_TOKEN),
            ],
        ),
        (
            "rest",
            &format!("--auth-mode bearer --set base_url={rest} --set health_path=/health"),
            vec![("token", creds::REST_TOKEN)],
        ),
        ("total-battle", &format!("--set base_url={game}"), vec![("api_key", creds::TOTAL_BATTLE_API_KEY)]),
    ] {
        let credentials: Vec<String> =
            credentials.iter().map(|(name, value)| format!("--credential {name}={value}")).collect();
        let settings = if settings.is_empty() { String::new() } else { format!(" {settings}") };
        println!("  switchboard connections install {provider}{settings} {}", credentials.join(" "));
    }
    println!("Ctrl-C stops the sandbox.");
    wait_for_signal(&mut signals()?).await;
    Ok(())
}

#[cfg(unix)]
type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);
#[cfg(not(unix))]
type Signals = ();

#[cfg(unix)]
fn signals() -> anyhow::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
}

#[cfg(not(unix))]
fn signals() -> anyhow::Result<Signals> {
    Ok(())
}

/// How a signal asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM, as orchestrators send it: drain first.
    Drain,
    /// SIGINT (Ctrl-C): at once.
    Now,
}

#[cfg(unix)]
async fn wait_for_signal(signals: &mut Signals) -> Stop {
    let (term, interrupt) = signals;
    tokio::select! {
        _ = term.recv() => Stop::Drain,
        _ = interrupt.recv() => Stop::Now,
    }
}

#[cfg(not(unix))]
async fn wait_for_signal(_: &mut Signals) -> Stop {
    let _ = tokio::signal::ctrl_c().await;
    Stop::Now
}
