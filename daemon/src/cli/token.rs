//! `tokenbot token get` and `tokenbot logs`: read the vault directly when no daemon holds it,
//! else ask the running daemon's API (service key from `TOKENBOT_API_KEY`). Output is the API's
//! JSON, so scripts see one shape either way.

use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::api::views::{AttemptLogView, AttemptView, TokenView, ValidToken, valid_token};
use crate::config::Config;
use crate::vault::{BrokerId, UserId, Vault, VaultError};

/// How a read ended: a JSON document, or "nothing there" (exit status 1).
enum Found {
    Json(Value),
    Missing(String),
}

fn print_found(found: Found) -> anyhow::Result<ExitCode> {
    match found {
        Found::Json(value) => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
        Found::Missing(why) => {
            eprintln!("{why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Run `read` on the vault, or `path` on the daemon when the daemon holds the vault.
fn read_vault_or_daemon(
    config: &Config,
    read: impl FnOnce(&Vault) -> anyhow::Result<Found>,
    path: &str,
) -> anyhow::Result<Found> {
    match super::vault::open_vault(config, false) {
        Ok((vault, _)) => read(&vault),
        Err(e) if matches!(e.downcast_ref::<VaultError>(), Some(VaultError::Locked)) => {
            read_from_daemon(config, path)
        }
        Err(e) => Err(e),
    }
}

fn read_from_daemon(config: &Config, path: &str) -> anyhow::Result<Found> {
    let Some(key) = &config.auth.api_key else {
        bail!(
            "the vault is held by a running daemon: set TOKENBOT_API_KEY to one of its service keys to read through it"
        );
    };
    let addr = super::daemon_address(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .header("x-api-key", key.expose_secret())
            .send()
            .await
            .with_context(|| format!("reaching the daemon at {addr}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Found::Missing(
                value["error"]["message"]
                    .as_str()
                    .unwrap_or("not found")
                    .to_owned(),
            ));
        }
        if !status.is_success() {
            bail!("the daemon answered {status}: {value}");
        }
        Ok(Found::Json(value))
    })
}

/// `tokenbot token get <user_id> [--broker ID]`: the user's valid token (the only broker's, or
/// the named one's).
pub(super) fn get(config: &Config, user: &str, broker: Option<&str>) -> anyhow::Result<ExitCode> {
    let user = UserId::new(user)?;
    let mut path = format!("/api/tokens/{}", user.as_str());
    if let Some(b) = broker {
        path.push_str(&format!("?broker={b}"));
    }
    let found = read_vault_or_daemon(
        config,
        |vault| token_in_vault(vault, &user, broker, vault.clock().now_ms()),
        &path,
    )?;
    print_found(found)
}

/// The user's token valid at `now_ms` (at `broker`, when named), read from the vault, as the API
/// answers it.
fn token_in_vault(
    vault: &Vault,
    user: &UserId,
    broker: Option<&str>,
    now_ms: i64,
) -> anyhow::Result<Found> {
    let missing = || Found::Missing(format!("no valid token for user {}", user.as_str()));
    // A name that is no broker id names no account.
    let Ok(broker) = broker.map(BrokerId::new).transpose() else {
        return Ok(missing());
    };
    let accounts = vault.user_tokens(user)?;
    match valid_token(&accounts, broker.as_ref(), now_ms) {
        ValidToken::None => Ok(missing()),
        ValidToken::One(account, token) => Ok(Found::Json(serde_json::to_value(TokenView::new(
            account, token,
        ))?)),
        ValidToken::Several(_) => bail!(
            "user {} has valid tokens at several brokers: name one with --broker",
            user.as_str()
        ),
    }
}

/// `tokenbot logs <user_id>`: the user's recent login attempts, newest first.
pub(super) fn logs(config: &Config, user: &str, limit: usize) -> anyhow::Result<ExitCode> {
    let user = UserId::new(user)?;
    let path = format!("/api/tokens/logs/{}", user.as_str());
    let found = read_vault_or_daemon(
        config,
        |vault| {
            let attempts = vault.attempts(&user, limit)?;
            let view = AttemptLogView {
                user_id: user.as_str().to_owned(),
                attempts: attempts.iter().map(AttemptView::from).collect(),
            };
            Ok(Found::Json(serde_json::to_value(view)?))
        },
        &path,
    )?;
    print_found(found)
}
