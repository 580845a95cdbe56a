//! `tokenbot user add | list | rm | set`: accounts in the vault. Secrets are prompted without echo
//! or read from `--from-json`, and never printed.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use broker_api::wire::Manifest;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::vault::{open_vault, prompt_secret};
use crate::config::Config;
use crate::credential_input::{Fields, check_fields};
use crate::plugins::{CREDENTIAL_FIELDS, Registry};
use crate::vault::{AccountKey, BrokerId, Flags, NewAccount, UserId};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Switch {
    On,
    Off,
}

impl Switch {
    fn on(self) -> bool {
        self == Switch::On
    }
}

#[derive(clap::Subcommand)]
pub(super) enum UserCommand {
    /// Add an account (or replace its credentials). The fields are the broker strategy's:
    /// prompted (secrets without echo) or read from a JSON object with the keys broker_user_id,
    /// password, api_key, api_secret, totp_secret.
    Add {
        /// The platform's user id.
        user_id: String,
        /// Broker id (`tokenbot plugins list`).
        #[arg(long)]
        broker: String,
        /// Read the fields from this JSON file, or from stdin with `-`.
        #[arg(long, value_name = "FILE|-")]
        from_json: Option<PathBuf>,
        /// Log in on the broker's schedule (default on; a replaced account keeps its setting).
        #[arg(long)]
        auto_refresh: Option<Switch>,
        /// Logged in by another system: never logged in here (default off).
        #[arg(long)]
        managed_externally: Option<Switch>,
    },
    /// Every account with its state; never a secret.
    List,
    /// Remove an account with its credentials, token and attempts.
    Rm {
        /// The platform's user id.
        user_id: String,
        /// Broker id.
        #[arg(long)]
        broker: String,
    },
    /// Change an account's flags.
    Set {
        /// The platform's user id.
        user_id: String,
        /// Broker id.
        #[arg(long)]
        broker: String,
        /// Log in on the broker's schedule.
        #[arg(long)]
        auto_refresh: Option<Switch>,
        /// Logged in by another system: never logged in here.
        #[arg(long)]
        managed_externally: Option<Switch>,
        /// Clear needs-attention without new credentials (the account was unlocked, the broker
        /// fixed): the stored password is sent again at the next login.
        #[arg(long)]
        clear_attention: bool,
    },
}

/// `--from-json`: exactly the shared field names.
type JsonFields = Fields;

/// `tokenbot user ...`.
pub(super) fn run(config: &Config, command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            user_id,
            broker,
            from_json,
            auto_refresh,
            managed_externally,
        } => add(
            config,
            &user_id,
            &broker,
            from_json,
            auto_refresh,
            managed_externally,
        ),
        UserCommand::List => list(config),
        UserCommand::Rm { user_id, broker } => {
            let key = AccountKey::parse(&user_id, &broker)?;
            let (vault, _) = open_vault(config, true)?;
            if vault.delete_account(&key)? {
                println!("removed {key}");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no account for user {user_id} at broker {broker}")
            }
        }
        UserCommand::Set {
            user_id,
            broker,
            auto_refresh,
            managed_externally,
            clear_attention,
        } => {
            if auto_refresh.is_none() && managed_externally.is_none() && !clear_attention {
                bail!(
                    "nothing to set: give --auto-refresh on|off, --managed-externally on|off \
                     and/or --clear-attention"
                );
            }
            let key = AccountKey::parse(&user_id, &broker)?;
            let (vault, _) = open_vault(config, true)?;
            let flags = Flags {
                auto_refresh: auto_refresh.map(Switch::on),
                managed_externally: managed_externally.map(Switch::on),
                clear_attention,
            };
            let account = vault.set_flags(&key, flags)?;
            println!(
                "{key}: auto_refresh {}, managed_externally {}, state {}",
                on_off(account.auto_refresh),
                on_off(account.managed_externally),
                account.state().as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn on_off(v: bool) -> &'static str {
    if v { "on" } else { "off" }
}

fn add(
    config: &Config,
    user_id: &str,
    broker: &str,
    from_json: Option<PathBuf>,
    auto_refresh: Option<Switch>,
    managed_externally: Option<Switch>,
) -> anyhow::Result<ExitCode> {
    let key = AccountKey::new(UserId::new(user_id)?, BrokerId::new(broker)?);
    let registry = Registry::load(&config.plugins);
    let Some(plugin) = registry.get(broker) else {
        let known: Vec<String> = registry.all().keys().cloned().collect();
        bail!("unknown broker {broker:?} (known: {})", known.join(", "));
    };
    // Everything is read and checked before the vault is opened: a bad field writes nothing.
    let fields = match from_json {
        Some(path) => read_json(&path)?,
        None => prompt_fields(&plugin.manifest, broker)?,
    };
    let (broker_user_id, credentials) = check_fields(&plugin.manifest, broker, fields)?;
    let (vault, _) = open_vault(config, true)?;
    let existing = vault.get_account(&key)?;
    let account = vault.put_account(&NewAccount {
        key: key.clone(),
        broker_user_id,
        credentials,
        auto_refresh: auto_refresh.map_or_else(
            || existing.as_ref().is_none_or(|a| a.auto_refresh),
            Switch::on,
        ),
        managed_externally: managed_externally.map_or_else(
            || existing.as_ref().is_some_and(|a| a.managed_externally),
            Switch::on,
        ),
    })?;
    println!(
        "{} {key} (broker user id {}), state {}",
        if existing.is_some() {
            "replaced"
        } else {
            "added"
        },
        account.broker_user_id,
        account.state().as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_json(path: &PathBuf) -> anyhow::Result<JsonFields> {
    let mut text = Zeroizing::new(String::new());
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the fields from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("reading {}", path.display()))?;
    }
    serde_json::from_str(&text).map_err(|e| {
        // Unknown and missing field names are safe to show; any other message might quote a value.
        let msg = e.to_string();
        if msg.starts_with("unknown field")
            || msg.starts_with("missing field")
            || msg.starts_with("duplicate field")
        {
            anyhow::anyhow!("--from-json: {msg}")
        } else {
            anyhow::anyhow!(
                "--from-json: not a JSON object of strings with the keys {} and the broker's own \
                 fields (line {}, column {})",
                CREDENTIAL_FIELDS.join(", "),
                e.line(),
                e.column()
            )
        }
    })
}

fn prompt_fields(manifest: &Manifest, broker: &str) -> anyhow::Result<JsonFields> {
    if !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal: give the fields with --from-json FILE (or - for stdin)");
    }
    let mut fields = JsonFields::default();
    eprintln!(
        "{} ({broker}): empty input skips an optional field",
        manifest.display_name
    );
    for field in &manifest.credential_fields {
        let label = format!(
            "{}{}{}: ",
            field.name,
            if field.label.is_empty() {
                String::new()
            } else {
                format!(" [{}]", field.label)
            },
            if field.required { "" } else { " (optional)" }
        );
        let value = if field.secret && field.name != "broker_user_id" {
            prompt_secret(&label)?
        } else {
            eprint!("{label}");
            std::io::stderr().flush().ok();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading from the terminal")?;
            SecretString::from(line.trim().to_owned())
        };
        if value.expose_secret().is_empty() {
            continue;
        }
        match field.name.as_str() {
            "broker_user_id" => fields.broker_user_id = Some(value.expose_secret().to_owned()),
            "password" => fields.password = Some(value),
            "api_key" => fields.api_key = Some(value),
            "api_secret" => fields.api_secret = Some(value),
            "totp_secret" => fields.totp_secret = Some(value),
            other => {
                fields.extra.insert(other.to_owned(), value);
            }
        }
    }
    Ok(fields)
}

fn list(config: &Config) -> anyhow::Result<ExitCode> {
    let (vault, _) = open_vault(config, false)?;
    let accounts = vault.list_accounts()?;
    println!(
        "{:<24} {:<10} {:<16} {:<34} {:<21} UPDATED",
        "USER", "BROKER", "BROKER_USER_ID", "STATE", "TOKEN_EXPIRES"
    );
    for account in &accounts {
        let token = vault.get_token(&account.key())?;
        let state = match &account.attention {
            Some(a) if account.state() == crate::vault::AccountState::NeedsAttention => {
                format!("needs_attention ({})", a.class)
            }
            _ => account.state().as_str().to_owned(),
        };
        println!(
            "{:<24} {:<10} {:<16} {:<34} {:<21} {}",
            account.user,
            account.broker,
            account.broker_user_id,
            state,
            token.map_or_else(|| "-".to_owned(), |t| rfc3339_seconds(t.expires_at_ms)),
            rfc3339_seconds(account.updated_at_ms)
        );
    }
    println!("{} account(s)", accounts.len());
    Ok(ExitCode::SUCCESS)
}

fn rfc3339_seconds(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
