//! `tokenbot refresh`: log accounts in now. Works on the vault directly when no daemon holds it,
//! and through the daemon's API (`TOKENBOT_API_KEY`) when one does.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use secrecy::ExposeSecret;

use crate::config::Config;
use crate::refresh::{AccountResult, RefreshSummary, Selection};
use crate::vault::{BrokerId, Trigger, UserId, VaultError};

/// Arguments of `tokenbot refresh`.
#[derive(clap::Args, Debug)]
pub struct RefreshArgs {
    /// Only this user's accounts.
    #[arg(long)]
    user: Option<String>,
    /// Only accounts at this broker.
    #[arg(long)]
    broker: Option<String>,
    /// Print every account's outcome and attempts.
    #[arg(long)]
    verbose: bool,
}

/// Run `tokenbot refresh`.
pub(super) fn run(config: Config, args: &RefreshArgs) -> anyhow::Result<ExitCode> {
    let selection = Selection {
        user: args.user.as_deref().map(UserId::new).transpose()?,
        broker: args.broker.as_deref().map(BrokerId::new).transpose()?,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let summary = match super::vault::open_vault(&config, true) {
        Ok((vault, _)) => {
            runtime.block_on(refresh_in_process(config, Arc::new(vault), selection))?
        }
        Err(e) if matches!(e.downcast_ref::<VaultError>(), Some(VaultError::Locked)) => {
            eprintln!("The vault is held by a running daemon: refreshing through its API.");
            runtime.block_on(refresh_through_daemon(&config, &selection))?
        }
        Err(e) => return Err(e),
    };
    print_summary(&summary, args.verbose);
    Ok(if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn refresh_in_process(
    config: Config,
    vault: Arc<crate::vault::Vault>,
    selection: Selection,
) -> anyhow::Result<RefreshSummary> {
    let state = crate::AppState::with_vault(config, vault);
    let refresher = state.refresher.clone();
    let keys = refresher
        .select(&selection)
        .await
        .map_err(anyhow::Error::msg)?;
    let named = selection.named();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(keys.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let mut running: FuturesUnordered<_> = keys
        .into_iter()
        .map(|key| refresher.refresh_account(key, Trigger::Manual, named))
        .collect();
    let mut results = Vec::new();
    while let Some(result) = running.next().await {
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{}/{}", result.user_id, result.broker));
                bar.inc(1);
            }
            None => println!("{}", result_line(&result)),
        }
        results.push(result);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    results.sort_by(|a, b| (&a.user_id, &a.broker).cmp(&(&b.user_id, &b.broker)));
    Ok(RefreshSummary::from_results(results))
}

async fn refresh_through_daemon(
    config: &Config,
    selection: &Selection,
) -> anyhow::Result<RefreshSummary> {
    let Some(key) = &config.auth.api_key else {
        bail!("set TOKENBOT_API_KEY to a service key of the running daemon to refresh through it");
    };
    let addr = super::daemon_address(config);
    let path = match &selection.user {
        Some(user) => format!("/api/integration/tokens/refresh/{}", user.as_str()),
        None => "/api/integration/tokens/refresh-all".to_owned(),
    };
    let mut url = url::Url::parse(&format!("http://{addr}{path}"))?;
    if let Some(broker) = &selection.broker {
        url.query_pairs_mut().append_pair("broker", broker.as_str());
    }
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .with_context(|| format!("reaching the daemon at {addr}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "the daemon answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let body = response
        .bytes()
        .await
        .context("reading the daemon's summary")?;
    serde_json::from_slice(&body).context("the daemon's summary is not the expected JSON")
}

fn result_line(r: &AccountResult) -> String {
    let mut line = format!(
        "{}/{}: {:?} ({} attempt{})",
        r.user_id,
        r.broker,
        r.outcome,
        r.attempts,
        if r.attempts == 1 { "" } else { "s" }
    );
    if let Some(class) = &r.error_class {
        line.push_str(&format!(" {class}"));
    }
    line.to_lowercase()
}

fn print_summary(summary: &RefreshSummary, verbose: bool) {
    if verbose {
        for r in &summary.results {
            match &r.message {
                Some(message) => println!("{}: {message}", result_line(r)),
                None => println!("{}", result_line(r)),
            }
        }
    }
    println!("Successful: {}", summary.successful);
    println!("Failed: {}", summary.failed);
    println!("Skipped: {}", summary.skipped);
    println!("Total: {}", summary.total);
}
