//! `dandelion-console`: parses the command line, finds the daemons and their
//! tokens, sets up the log file and the terminal, and runs the event loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dandelion_console::app::{App, Tokens};
use dandelion_console::cli::Cli;
use dandelion_console::theme::Theme;
use dandelion_core::console::{LocalNetwork, NETWORK_FILE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dandelion-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token {}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn context_source(cli: &Cli) -> dandelion_console::contexts::Source {
    dandelion_console::contexts::Source {
        explicit: cli.contexts.clone(),
        data_dir: cli.data_dir.clone(),
    }
}

/// The daemons to attach to and their tokens.
fn targets(cli: &Cli) -> anyhow::Result<(Vec<String>, Tokens)> {
    let given = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(path)) => Some(read_token(path)?),
        (None, None) => None,
    };
    if let Some(name) = &cli.context {
        return dandelion_console::contexts::open(&context_source(cli), name);
    }
    if !cli.urls.is_empty() {
        for url in &cli.urls {
            dandelion_core::console::console_url(url)?;
        }
        return Ok((
            cli.urls.clone(),
            Tokens {
                given,
                ..Tokens::default()
            },
        ));
    }
    let net = LocalNetwork::load_trusted(&cli.data_dir)?.with_context(|| {
        format!(
            "no daemon URL given and no local network in {} (no readable {NETWORK_FILE}); start one with \
             `dandelion up`, or pass URLs like https://HOST:7070",
            cli.data_dir.display()
        )
    })?;
    let mut tokens = Tokens {
        given,
        ..Tokens::default()
    };
    let mut urls = Vec::new();
    for (url, token_file) in net.daemons() {
        if let Ok(token) = read_token(&token_file) {
            tokens.by_url.insert(url.clone(), token);
        }
        urls.push(url);
    }
    Ok((urls, tokens))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let theme = Theme::load(&cli.theme, no_color)?;
    if let Some(ca) = &cli.ca_file {
        dandelion_core::tls::trust(ca).context("--ca-file")?;
    }
    let log_path = cli
        .log_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("dandelion-console.log"));
    let _guard = log_to(&log_path)?;
    let (urls, tokens) = targets(&cli)?;
    let start_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut app = App::new(tokens, &start_dir, dandelion_console::net::now());
    let mut first = Vec::new();
    for url in &urls {
        first.extend(app.attach(url));
    }
    app.active = 0;
    tracing::info!(?urls, theme = %theme.name, "console starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let result = runtime.block_on(dandelion_console::shell::run(
        &mut terminal,
        app,
        &theme,
        first,
        &context_source(&cli),
    ));
    ratatui::restore();
    // Feed tasks may be waiting on sockets; they are not worth waiting for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    tracing::info!("console stopped");
    result
}

/// Logs go to a file: the terminal belongs to the screen.
fn log_to(path: &Path) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    Ok(guard)
}
