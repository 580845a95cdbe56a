//! Helpers shared by integration tests: building plugins as the operator would, and a headless
//! browser (`browser`).

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Say that `test` was skipped and why, where a person running the tests sees it: straight to the
/// process's stderr, since libtest would hide an `eprintln!` of a passing test behind its `ok`.
pub fn say_skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The target directory of this build (`CARGO_TARGET_DIR`'s, or the workspace's `target`): the
/// parent of the `tmp` folder cargo names to integration tests when it compiles them.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Where builds made by tests put their final artifacts (binaries, `.so` files): away from
/// `target/debug`, so a daemon built with other features never replaces the `tokenbot` binary
/// the other tests run.
pub fn fixtures_target() -> PathBuf {
    workspace_root().join("target").join("plugin-fixtures")
}

/// Run cargo with its final artifacts in `target_dir`. Builds of this workspace keep their
/// intermediate artifacts in the main build directory (`build_dir`), so they reuse the
/// dependencies the test run compiled instead of building them all again. Cargo holds the build
/// directory's lock only while it compiles, so these builds run while the tests do.
fn run_cargo(args: &[&str], target_dir: &Path, build_dir: Option<&Path>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_BUILD_DIR");
    if let Some(dir) = build_dir {
        command
            .arg("--config")
            .arg(format!("build.build-dir={dir:?}"));
    }
    let output = command.output().expect("running cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The main build directory: where the test run's own build keeps its dependencies.
fn main_build_dir() -> PathBuf {
    workspace_root().join("target")
}

/// Build the drop-in plugin of a workspace strategy crate (`broker-kite` is built by its plugin
/// crate, `tokenbot-plugin-kite` in `brokers/kite/plugin`) and return the path of its `.so`.
pub fn broker_so(strategy: &str) -> PathBuf {
    let broker = strategy
        .strip_prefix("broker-")
        .unwrap_or_else(|| panic!("{strategy} is not a broker strategy crate"));
    let package = format!("tokenbot-plugin-{broker}");
    let target = fixtures_target().join("brokers");
    let manifest = workspace_root().join("Cargo.toml");
    run_cargo(
        &[
            "build",
            "--quiet",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-p",
            &package,
        ],
        &target,
        Some(&main_build_dir()),
    );
    target
        .join("debug")
        .join(format!("lib{}.so", package.replace('-', "_")))
}

/// Build a stand-alone Cargo project (own workspace and lock file) and return its `.so`.
pub fn external_so(project: &Path, lib_name: &str) -> PathBuf {
    let target = fixtures_target().join(project.file_name().unwrap());
    let manifest = project.join("Cargo.toml");
    run_cargo(
        &[
            "build",
            "--quiet",
            "--manifest-path",
            manifest.to_str().unwrap(),
        ],
        &target,
        None,
    );
    target.join("debug").join(format!("lib{lib_name}.so"))
}

/// Copy `so` into `dir` under `name`, as an operator's `install` would (new inode).
pub fn install(so: &Path, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(so, &tmp).unwrap();
    std::fs::rename(&tmp, &dest).unwrap();
    dest
}

/// The strategies the daemon bundles by default, each behind the cargo feature `broker-<id>`.
pub const BUNDLED_BROKERS: &[&str] = &[
    "kite",
    "iifl",
    "iifl-xts",
    "angelone",
    "dhan",
    "fyers",
    "kotak-neo",
    "motilal",
    "fivepaisa",
    "shoonya",
    "upstox",
];

/// Build the `tokenbot` binary with every bundled strategy but `broker`'s (its cargo feature
/// off), with the test run's optional features, and return its path (under [`fixtures_target`]).
pub fn daemon_without(broker: &str) -> PathBuf {
    assert!(BUNDLED_BROKERS.contains(&broker), "{broker} is not bundled");
    // The optional features this test run has too, so the build shares its dependencies.
    let optional = [
        ("sled", cfg!(feature = "sled")),
        ("postgres-tls", cfg!(feature = "postgres-tls")),
    ];
    let features = BUNDLED_BROKERS
        .iter()
        .filter(|&&b| b != broker)
        .map(|b| format!("broker-{b}"))
        .chain(
            optional
                .iter()
                .filter(|(_, on)| *on)
                .map(|(f, _)| f.to_string()),
        )
        .collect::<Vec<_>>()
        .join(",");
    let target = fixtures_target().join("brokers");
    let manifest = workspace_root().join("Cargo.toml");
    // Another build with another feature set overwrites `debug/tokenbot`: one at a time, each
    // copied out before the next.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_cargo(
        &[
            "build",
            "--quiet",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-p",
            "tokenbot",
            "--bin",
            "tokenbot",
            "--no-default-features",
            "--features",
            &features,
        ],
        &target,
        Some(&main_build_dir()),
    );
    let bin = target
        .join("debug")
        .join(format!("tokenbot-without-{broker}"));
    std::fs::copy(target.join("debug").join("tokenbot"), &bin).unwrap();
    bin
}
