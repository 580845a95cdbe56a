//! Packs the `tokenbot` binary's relative relocations (`-z pack-relative-relocs`, DT_RELR) when
//! the linker can: in a position-independent executable they are about 1 MB of `.rela.dyn`,
//! which DT_RELR stores in a few KB (docs/performance.md, "Binary size").
//!
//! The binary then needs glibc 2.36 or later where it runs. The linker records that as a symbol
//! version (`GLIBC_ABI_DT_RELR`), so an older glibc refuses to start it with a message naming the
//! version rather than crashing. The flag is used only when a probe program linked with it runs
//! here, so a build on an older system (or with a linker that ignores the flag) leaves it out.
//! A binary built on glibc 2.36+ for older hosts: build it with `TOKENBOT_RELR=0`.

use std::path::Path;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TOKENBOT_RELR");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    let native_gnu_linux = target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && target("HOST") == target("TARGET");
    if !native_gnu_linux || target("TOKENBOT_RELR") == "0" {
        return;
    }
    if links_with_relr(Path::new(&target("OUT_DIR"))) {
        println!("cargo::rustc-link-arg-bins={FLAG}");
    }
}

/// Whether the C toolchain links a PIE with DT_RELR without a complaint, and the result runs: the
/// C library here supports it. (rustc may link with its own lld rather than this `cc`; both take
/// the flag, and a probe that fails only leaves the flag out.)
fn links_with_relr(dir: &Path) -> bool {
    let source = dir.join("relr-probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let program = dir.join("relr-probe");
    let linked = Command::new(linker)
        .args(["-pie", "-fPIE", FLAG, "-o"])
        .arg(&program)
        .arg(&source)
        .stdin(Stdio::null())
        .output();
    // A linker that ignores the flag says so on stderr ("warning: -z pack-relative-relocs
    // ignored"): that is a no too.
    let linked = matches!(linked, Ok(out) if out.status.success() && out.stderr.is_empty());
    linked && Command::new(&program).status().is_ok_and(|s| s.success())
}
