//! The registry of loaded strategies: the bundled ones, then every `.so` of `[plugins] dir`,
//! rescanned on SIGHUP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use broker_api::abi::EntryFn;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{LoadError, Plugin, Source};
use crate::config::PluginsConfig;

/// A plugin that failed to load, kept for `plugins list` and `/health/detailed`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[serde(serialize_with = "as_display")]
    pub error: LoadError,
}

fn as_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The strategies compiled into this binary, by their entry functions.
pub const BUNDLED: &[EntryFn] = &[
    #[cfg(feature = "broker-kite")]
    broker_kite::entry,
    #[cfg(feature = "broker-iifl")]
    broker_iifl::entry,
    #[cfg(feature = "broker-iifl-xts")]
    broker_iifl_xts::entry,
    #[cfg(feature = "broker-angelone")]
    broker_angelone::entry,
    #[cfg(feature = "broker-dhan")]
    broker_dhan::entry,
    #[cfg(feature = "broker-fyers")]
    broker_fyers::entry,
    #[cfg(feature = "broker-kotak-neo")]
    broker_kotak_neo::entry,
    #[cfg(feature = "broker-motilal")]
    broker_motilal::entry,
    #[cfg(feature = "broker-fivepaisa")]
    broker_fivepaisa::entry,
    #[cfg(feature = "broker-shoonya")]
    broker_shoonya::entry,
    #[cfg(feature = "broker-upstox")]
    broker_upstox::entry,
];

/// The loaded strategies, by broker id. Readers clone the `Arc` of the current map; a rescan builds
/// a new map and swaps it in, so a login in flight keeps the plugin it started with.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: RwLock<Arc<BTreeMap<String, Arc<Plugin>>>>,
    /// Failures of the last scan, for `plugins list` and `/health/detailed`.
    failures: RwLock<Vec<LoadFailure>>,
    /// `.so` files already loaded, by path and digest: a rescan does not load them again.
    loaded: RwLock<BTreeMap<PathBuf, String>>,
}

impl Registry {
    /// Bundled strategies, then every `.so` of `config.dir`.
    pub fn load(config: &PluginsConfig) -> Registry {
        let registry = Registry::default();
        let mut map = BTreeMap::new();
        for entry in BUNDLED {
            // SAFETY: bundled entry functions are part of this binary.
            match unsafe { Plugin::from_entry(*entry, Source::Bundled, None) } {
                Ok(plugin) => {
                    map.insert(plugin.id.clone(), Arc::new(plugin));
                }
                Err(e) => tracing::error!(error = %e, "a bundled strategy failed to register"),
            }
        }
        *registry.plugins.write() = Arc::new(map);
        registry.rescan(config);
        registry
    }

    /// Load `.so` files not loaded yet (new paths, or changed digests); report failures.
    pub fn rescan(&self, config: &PluginsConfig) {
        let mut failures = Vec::new();
        let mut map = (**self.plugins.read()).clone();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&config.dir) {
            Ok(dir) => dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), error = %e, "cannot read the plugins directory");
                Vec::new()
            }
        };
        paths.sort();
        for path in paths {
            let digest = std::fs::read(&path)
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_default();
            if self.loaded.read().get(&path) == Some(&digest) {
                continue;
            }
            match Plugin::load_file(&path, &config.sha256_allowlist) {
                Ok(plugin) => {
                    match map.get(&plugin.id) {
                        Some(old) => tracing::warn!(
                            id = %plugin.id, path = %path.display(), replaces = %old.source, version = %plugin.version,
                            "plugin replaces an earlier strategy with the same id"
                        ),
                        None => {
                            tracing::info!(id = %plugin.id, path = %path.display(), version = %plugin.version, "plugin loaded")
                        }
                    }
                    self.loaded.write().insert(path, digest);
                    map.insert(plugin.id.clone(), Arc::new(plugin));
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "plugin not loaded");
                    failures.push(LoadFailure { path, error });
                }
            }
        }
        *self.plugins.write() = Arc::new(map);
        *self.failures.write() = failures;
    }

    /// The strategy for `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().get(id).cloned()
    }

    /// Every configured setting that its broker's strategy does not declare, as messages.
    /// Brokers with no loaded strategy are left alone (their logins already fail clearly).
    pub fn unknown_settings(
        &self,
        brokers: &BTreeMap<String, crate::config::BrokerConfig>,
    ) -> Vec<String> {
        brokers
            .iter()
            .filter_map(|(id, broker)| self.get(id)?.settings(&broker.settings).err())
            .collect()
    }

    /// Every loaded strategy, by id.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<Plugin>>> {
        self.plugins.read().clone()
    }

    /// Failures of the last scan.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures.read().clone()
    }
}
