//! The storage engines that implement [`Store`]: redb (default, `redb_engine.rs`), sled (cargo
//! feature `sled`, `sled_engine.rs`) and PostgreSQL (`pg_engine.rs`). Only those files know
//! their crates.

use std::path::{Path, PathBuf};

use super::error::VaultError;
use super::pg_engine::{PgStore, PgTarget};
use super::redb_engine::RedbStore;
use super::store::{Mode, Store};

/// Where a vault lives: a file (redb) or directory (sled), or a schema of a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Location {
    /// A redb file or a sled directory.
    Path(PathBuf),
    /// A PostgreSQL database and schema.
    Postgres(PgTarget),
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Path(path.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Path(path.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Path(path)
    }
}

impl From<&Location> for Location {
    fn from(at: &Location) -> Location {
        at.clone()
    }
}

impl From<PgTarget> for Location {
    fn from(target: PgTarget) -> Location {
        Location::Postgres(target)
    }
}

impl std::fmt::Display for Location {
    /// The path, or the database's host, port, name and schema (never a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Path(path) => write!(f, "{}", path.display()),
            Location::Postgres(target) => f.write_str(&target.label()),
        }
    }
}

impl Location {
    /// Whether a vault (or, for a path, anything) is there.
    pub(crate) fn exists(&self) -> Result<bool, VaultError> {
        match self {
            Location::Path(path) => Ok(path.exists()),
            Location::Postgres(target) => PgStore::exists(target),
        }
    }
}

/// Storage engine of the vault, as `[vault] engine` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// redb (default).
    #[default]
    Redb,
    /// sled (cargo feature `sled`).
    Sled,
    /// PostgreSQL (`[vault] url`, `schema`).
    Postgres,
}

impl std::str::FromStr for Engine {
    type Err = VaultError;

    /// `redb`, `sled` or `postgres`, as `[vault] engine` spells them.
    fn from_str(name: &str) -> Result<Engine, VaultError> {
        match name {
            "redb" => Ok(Engine::Redb),
            "sled" => Ok(Engine::Sled),
            "postgres" => Ok(Engine::Postgres),
            other => Err(VaultError::UnknownEngine(other.to_owned())),
        }
    }
}

/// Open a store. `Ok(None)` for [`Mode::ReadOnly`] means the file was not closed cleanly and
/// needs a repair, which only a writable open does.
pub(crate) fn open(
    engine: Engine,
    at: &Location,
    mode: Mode,
) -> Result<Option<Box<dyn Store>>, VaultError> {
    match mode {
        Mode::Create if at.exists()? => return Err(VaultError::AlreadyExists(at.to_string())),
        Mode::Write | Mode::ReadOnly if !at.exists()? => {
            return Err(VaultError::NotFound(at.to_string()));
        }
        _ => {}
    }
    let path = match (engine, at) {
        (Engine::Postgres, Location::Postgres(target)) => return PgStore::open(target, mode),
        (Engine::Redb | Engine::Sled, Location::Path(path)) => path,
        (Engine::Postgres, Location::Path(_)) => {
            return Err(VaultError::Storage(
                "the postgres engine needs [vault] url (TOKENBOT_VAULT_URL)".into(),
            ));
        }
        (_, Location::Postgres(_)) => {
            return Err(VaultError::Storage(format!(
                "a PostgreSQL location needs engine = \"postgres\", not {engine:?}"
            )));
        }
    };
    if mode == Mode::Create
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        create_private_dir(dir).map_err(|e| VaultError::Storage(e.to_string()))?;
    }
    let store = match engine {
        #[cfg(feature = "sled")]
        Engine::Sled => super::sled_engine::SledStore::open(path, mode),
        #[cfg(not(feature = "sled"))]
        Engine::Sled => Err(VaultError::EngineUnavailable("sled")),
        Engine::Redb => RedbStore::open(path, mode),
        Engine::Postgres => Err(VaultError::Storage("a PostgreSQL vault has no path".into())),
    }?;
    if mode == Mode::Create {
        restrict_to_owner(path).map_err(|e| VaultError::Storage(e.to_string()))?;
    }
    Ok(store)
}

/// `dir` and its missing parents, those it creates readable by the owner only (0700). An existing
/// directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// A new vault readable by its owner only: a file 0600, a directory (sled) 0700.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
