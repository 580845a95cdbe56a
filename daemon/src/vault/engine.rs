//! The storage engines that implement [`Store`]: redb (default, `redb_engine.rs`) and sled (cargo
//! feature `sled`, `sled_engine.rs`). Only those two files know either crate.

use std::path::Path;

use super::error::VaultError;
use super::redb_engine::RedbStore;
use super::store::{Mode, Store};

/// Storage engine of the vault, as `[vault] engine` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// redb (default).
    #[default]
    Redb,
    /// sled (cargo feature `sled`).
    Sled,
}

impl std::str::FromStr for Engine {
    type Err = VaultError;

    /// `redb` or `sled`, as `[vault] engine` spells them.
    fn from_str(name: &str) -> Result<Engine, VaultError> {
        match name {
            "redb" => Ok(Engine::Redb),
            "sled" => Ok(Engine::Sled),
            other => Err(VaultError::UnknownEngine(other.to_owned())),
        }
    }
}

/// Open a store. `Ok(None)` for [`Mode::ReadOnly`] means the file was not closed cleanly and
/// needs a repair, which only a writable open does.
pub(crate) fn open(
    engine: Engine,
    path: &Path,
    mode: Mode,
) -> Result<Option<Box<dyn Store>>, VaultError> {
    match mode {
        Mode::Create if path.exists() => return Err(VaultError::AlreadyExists(path.to_owned())),
        Mode::Write | Mode::ReadOnly if !path.exists() => {
            return Err(VaultError::NotFound(path.to_owned()));
        }
        _ => {}
    }
    if mode == Mode::Create
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        create_private_dir(dir).map_err(|e| VaultError::Storage(e.to_string()))?;
    }
    let store = match engine {
        Engine::Redb => RedbStore::open(path, mode),
        #[cfg(feature = "sled")]
        Engine::Sled => super::sled_engine::SledStore::open(path, mode),
        #[cfg(not(feature = "sled"))]
        Engine::Sled => Err(VaultError::EngineUnavailable("sled")),
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
