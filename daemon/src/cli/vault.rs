//! `tokenbot init` and `tokenbot vault rekey | verify | copy`, plus opening the vault for every
//! command that needs it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::vault::key::{self, KeyOrigin, ResolvedKey};
use crate::vault::{
    Engine, KeyMaterial, Location, MasterKey, PgTarget, Vault, VaultError, VaultOptions, location,
};

/// Env variable holding the new master key (64 hex chars) for `vault rekey`.
pub(super) const NEW_KEY_ENV: &str = "TOKENBOT_NEW_ENCRYPTION_KEY";
/// Env variable holding the new passphrase for `vault rekey`.
pub(super) const NEW_PASSPHRASE_ENV: &str = "TOKENBOT_NEW_PASSPHRASE";

#[derive(clap::Args)]
pub(super) struct InitArgs {
    /// Protect a new vault with a passphrase typed at a prompt (instead of a key file).
    #[arg(long)]
    passphrase: bool,
}

#[derive(clap::Subcommand)]
pub(super) enum VaultCommand {
    /// Re-encrypt every record under a new key, in one transaction. The new key comes from
    /// TOKENBOT_NEW_ENCRYPTION_KEY (64 hex chars) or TOKENBOT_NEW_PASSPHRASE, from a prompt
    /// (--passphrase), or is generated into a new key file (--new-key-file).
    Rekey(RekeyArgs),
    /// Decrypt every record; print counts per table and every failure. Exit status 1 on any
    /// failure.
    Verify,
    /// Copy the vault into a new one on another engine, e.g. `--to sled:data/vault.sled` or
    /// `--to postgres:` (the database of [vault] url / TOKENBOT_VAULT_URL, schema [vault]
    /// schema). The copy opens with the same key; it is verified after copying.
    Copy {
        /// Destination as `<engine>:<path>` (`redb`, `sled`; the path must not exist) or
        /// `postgres:[URL]` (no vault in that schema yet; without a URL, [vault] url).
        #[arg(long, value_name = "ENGINE:WHERE")]
        to: String,
    },
}

#[derive(clap::Args)]
pub(super) struct RekeyArgs {
    /// Prompt for the new passphrase (twice, without echo).
    #[arg(long)]
    passphrase: bool,
    /// Generate a new random key into this file (mode 0600). If it is the key file in use, the new
    /// key waits in `<file>.new` until the rekey has committed, then replaces it.
    #[arg(long, value_name = "PATH")]
    new_key_file: Option<PathBuf>,
}

/// Prompt on the terminal without echo.
pub(super) fn prompt_secret(prompt: &str) -> anyhow::Result<SecretString> {
    let value = rpassword::prompt_password(prompt).context("reading from the terminal")?;
    Ok(SecretString::from(value))
}

fn prompt_new_passphrase() -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        bail!("--passphrase needs a terminal; set {NEW_PASSPHRASE_ENV} instead");
    }
    let first = prompt_secret("New passphrase: ")?;
    let second = prompt_secret("Repeat it: ")?;
    if first.expose_secret() != second.expose_secret() {
        bail!("the passphrases differ; nothing was changed");
    }
    if first.expose_secret().is_empty() {
        bail!("the passphrase is empty; nothing was changed");
    }
    Ok(first)
}

/// The configured key; for a passphrase vault with nothing configured, a prompt on a terminal.
fn resolve_key(config: &Config) -> anyhow::Result<ResolvedKey> {
    let vc = &config.vault;
    match key::resolve(vc, false) {
        Ok(resolved) => Ok(resolved),
        Err(VaultError::NoKey(why))
            if std::io::stdin().is_terminal()
                && Engine::configured(vc)
                    .and_then(|engine| Vault::inspect(location(vc), engine))
                    .is_ok_and(|info| info.passphrase) =>
        {
            tracing::debug!("{why}; prompting for the passphrase");
            Ok(ResolvedKey {
                material: KeyMaterial::Passphrase(prompt_secret("Vault passphrase: ")?),
                origin: KeyOrigin::Prompt,
            })
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("vault {}", location(vc)))),
    }
}

/// Open the configured vault (never creating it); read-only unless `write`.
pub(super) fn open_vault(config: &Config, write: bool) -> anyhow::Result<(Vault, ResolvedKey)> {
    let vc = &config.vault;
    let resolved = resolve_key(config)?;
    let options = VaultOptions::default();
    let engine = Engine::configured(vc)?;
    let vault = if write {
        Vault::open(location(vc), engine, &resolved.material, options)
    } else {
        Vault::open_read_only(location(vc), engine, &resolved.material, options)
    }
    .with_context(|| format!("vault {} (key from {})", location(vc), resolved.origin))?;
    Ok((vault, resolved))
}

/// `tokenbot init`.
pub(super) fn init(config: &Config, args: &InitArgs) -> anyhow::Result<ExitCode> {
    let vc = &config.vault;
    let at = location(vc);
    let existed = at.exists().with_context(|| format!("vault {at}"))?;
    let (vault, origin) = if args.passphrase {
        if existed {
            bail!(
                "vault {at} already exists; use `tokenbot vault rekey --passphrase` to change its key"
            );
        }
        let pass = prompt_new_passphrase()?;
        let vault = Vault::create(
            at.clone(),
            Engine::configured(vc)?,
            &KeyMaterial::Passphrase(pass),
            VaultOptions::default(),
        )
        .with_context(|| format!("vault {at}"))?;
        (vault, KeyOrigin::Prompt)
    } else {
        Vault::open_configured(vc, VaultOptions::default(), true)
            .with_context(|| format!("vault {at}"))?
    };
    let accounts = vault.counts()?.get("accounts").copied().unwrap_or(0);
    println!(
        "vault {at} {} ({:?}, schema {}, {accounts} accounts); key from {origin}",
        if existed {
            "already exists, key checked"
        } else {
            "created"
        },
        vault.engine(),
        crate::vault::SCHEMA_VERSION,
    );
    if let KeyOrigin::CreatedKeyFile(path) = &origin {
        println!(
            "WARNING: created a development master key at {} (mode 0600). Back it up; in production set \
             ENCRYPTION_KEY or TOKENBOT_PASSPHRASE instead.",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tokenbot vault ...`.
pub(super) fn run(config: &Config, command: VaultCommand) -> anyhow::Result<ExitCode> {
    match command {
        VaultCommand::Verify => verify(config),
        VaultCommand::Rekey(args) => rekey(config, &args),
        VaultCommand::Copy { to } => copy(config, &to),
    }
}

fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let (vault, _) = open_vault(config, false)?;
    let report = vault.verify().context("verifying the vault")?;
    for (table, count) in &report.counts {
        println!("{table:<12} {count}");
    }
    for failure in &report.failures {
        println!(
            "FAILED {} {}: {}",
            failure.table, failure.key, failure.error
        );
    }
    if report.is_ok() {
        println!("ok: every record decrypted and checked");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} failure(s)", report.failures.len());
        Ok(ExitCode::FAILURE)
    }
}

fn rekey(config: &Config, args: &RekeyArgs) -> anyhow::Result<ExitCode> {
    let env_key = std::env::var(NEW_KEY_ENV).ok();
    let env_pass = std::env::var(NEW_PASSPHRASE_ENV).ok();
    let chosen = [
        env_key.is_some(),
        env_pass.is_some(),
        args.passphrase,
        args.new_key_file.is_some(),
    ];
    match chosen.iter().filter(|c| **c).count() {
        1 => {}
        0 => bail!(
            "no new key: set {NEW_KEY_ENV} (64 hex chars) or {NEW_PASSPHRASE_ENV}, or pass --passphrase or \
             --new-key-file PATH"
        ),
        _ => bail!(
            "give exactly one new key: {NEW_KEY_ENV}, {NEW_PASSPHRASE_ENV}, --passphrase or --new-key-file"
        ),
    }
    let (vault, current) = open_vault(config, true)?;
    if let Some(hex) = env_key {
        let key = MasterKey::from_hex(&hex, NEW_KEY_ENV)?;
        vault.rekey(&KeyMaterial::Key(key)).context("rekeying")?;
        println!("rekeyed; from now on set ENCRYPTION_KEY to the value of {NEW_KEY_ENV}");
    } else if let Some(pass) = env_pass {
        if pass.is_empty() {
            bail!("{NEW_PASSPHRASE_ENV} is empty");
        }
        vault
            .rekey(&KeyMaterial::Passphrase(pass.into()))
            .context("rekeying")?;
        println!("rekeyed; from now on set TOKENBOT_PASSPHRASE to the new passphrase");
    } else if args.passphrase {
        let pass = prompt_new_passphrase()?;
        vault
            .rekey(&KeyMaterial::Passphrase(pass))
            .context("rekeying")?;
        println!("rekeyed; from now on set TOKENBOT_PASSPHRASE to the new passphrase");
    } else if let Some(path) = &args.new_key_file {
        rekey_to_key_file(&vault, &current.origin, path)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Generate a key into `path` (on disk before the vault changes, so the vault is never left
/// with a key that exists nowhere), then rekey.
fn rekey_to_key_file(vault: &Vault, current: &KeyOrigin, path: &Path) -> anyhow::Result<()> {
    let key = MasterKey::generate();
    let in_use = matches!(current, KeyOrigin::KeyFile(p) if same_file(p, path));
    if in_use {
        let mut staged = path.as_os_str().to_owned();
        staged.push(".new");
        let staged = PathBuf::from(staged);
        key::write_key_file(&staged, &key).context("writing the new key")?;
        vault.rekey(&KeyMaterial::Key(key)).with_context(|| {
            format!(
                "rekeying (the vault still uses {}; delete {})",
                path.display(),
                staged.display()
            )
        })?;
        std::fs::rename(&staged, path).with_context(|| {
            format!(
                "the vault now uses the key in {}: move it to {}",
                staged.display(),
                path.display()
            )
        })?;
        println!("rekeyed; the key file {} holds the new key", path.display());
    } else {
        if path.exists() {
            bail!(
                "{} exists and is not the key file in use; refusing to overwrite it",
                path.display()
            );
        }
        key::write_key_file(path, &key).context("writing the new key")?;
        vault.rekey(&KeyMaterial::Key(key)).context("rekeying")?;
        println!(
            "rekeyed; the new key is in {} (point [vault] key_file at it)",
            path.display()
        );
    }
    Ok(())
}

/// `--to <engine>:<where>`: a path for redb and sled; for postgres a URL, or nothing for
/// `[vault] url` (`TOKENBOT_VAULT_URL`), which keeps a password off the command line. The
/// schema is `[vault] schema`.
fn parse_target(config: &Config, to: &str) -> anyhow::Result<(Engine, Location)> {
    let Some((engine, rest)) = to.split_once(':') else {
        bail!(
            "--to {to:?}: expected <engine>:<path or URL>, e.g. sled:data/vault.sled or postgres:"
        );
    };
    let engine = match engine {
        "redb" => Engine::Redb,
        "sled" => Engine::Sled,
        "postgres" => {
            let url = match rest {
                "" => config.vault.url.clone().with_context(|| {
                    "--to postgres: needs [vault] url or TOKENBOT_VAULT_URL".to_owned()
                })?,
                url => SecretString::from(url.to_owned()),
            };
            let target = PgTarget::new(url, &config.vault.schema);
            target
                .check()
                .map_err(|why| anyhow::anyhow!("--to postgres: {why}"))?;
            return Ok((Engine::Postgres, Location::Postgres(target)));
        }
        other => bail!("--to: unknown engine {other:?} (redb, sled or postgres)"),
    };
    if rest.is_empty() {
        bail!("--to {to:?}: the path is empty");
    }
    Ok((engine, Location::Path(PathBuf::from(rest))))
}

fn copy(config: &Config, to: &str) -> anyhow::Result<ExitCode> {
    let (engine, at) = parse_target(config, to)?;
    let (vault, resolved) = open_vault(config, false)?;
    let copied = vault
        .copy_to(engine, at.clone())
        .with_context(|| format!("copying to {engine:?} at {at}"))?;
    drop(vault);
    let target = Vault::open_read_only(
        at.clone(),
        engine,
        &resolved.material,
        VaultOptions::default(),
    )
    .with_context(|| format!("opening the copy at {at}"))?;
    let report = target.verify().context("verifying the copy")?;
    for (table, count) in &copied.counts {
        println!("{table:<12} {count}");
    }
    if !report.is_ok() || report.counts != copied.counts {
        for failure in &report.failures {
            println!(
                "FAILED {} {}: {}",
                failure.table, failure.key, failure.error
            );
        }
        println!("the copy at {at} does not verify");
        return Ok(ExitCode::FAILURE);
    }
    println!("copied to {engine:?} at {at} and verified; it opens with the same key");
    Ok(ExitCode::SUCCESS)
}
