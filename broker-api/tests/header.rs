//! The C header must describe exactly the Rust ABI: this test compiles a probe against
//! `include/tokenbot_broker.h` with the system C compiler and compares every size, offset and
//! constant it prints with the Rust definitions.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use broker_api::abi::*;

const PROBE: &str = r#"
#include <stdio.h>
#include "tokenbot_broker.h"
#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
int main(void) {
    P("ENTRY_SYMBOL_LEN", sizeof(TOKENBOT_ENTRY_SYMBOL) - 1);
    printf("ENTRY_SYMBOL %s\n", TOKENBOT_ENTRY_SYMBOL);
    P("HOST_MAGIC", TOKENBOT_HOST_MAGIC);
    P("PLUGIN_MAGIC", TOKENBOT_PLUGIN_MAGIC);
    P("ABI_MAJOR", TOKENBOT_ABI_MAJOR);
    P("ABI_MINOR", TOKENBOT_ABI_MINOR);
    P("STATUS_OK", TOKENBOT_STATUS_OK);
    P("STATUS_ERROR", TOKENBOT_STATUS_ERROR);
    P("STATUS_PANIC", TOKENBOT_STATUS_PANIC);
    P("STATUS_BAD_INPUT", TOKENBOT_STATUS_BAD_INPUT);
    P("STATUS_UNSUPPORTED", TOKENBOT_STATUS_UNSUPPORTED);
    P("STATUS_DENIED", TOKENBOT_STATUS_DENIED);
    P("STATUS_TOO_LARGE", TOKENBOT_STATUS_TOO_LARGE);
    P("STATUS_TIMEOUT", TOKENBOT_STATUS_TIMEOUT);
    P("sizeof status", sizeof(tokenbot_status));
    P("sizeof header", sizeof(tokenbot_header));
    P("header.magic", offsetof(tokenbot_header, magic));
    P("header.struct_size", offsetof(tokenbot_header, struct_size));
    P("header.abi_major", offsetof(tokenbot_header, abi_major));
    P("header.abi_minor", offsetof(tokenbot_header, abi_minor));
    P("sizeof bytes", sizeof(tokenbot_bytes));
    P("bytes.ptr", offsetof(tokenbot_bytes, ptr));
    P("bytes.len", offsetof(tokenbot_bytes, len));
    P("sizeof sink", sizeof(tokenbot_sink));
    P("sink.ctx", offsetof(tokenbot_sink, ctx));
    P("sink.write", offsetof(tokenbot_sink, write));
    P("sizeof host", sizeof(tokenbot_host_table));
    P("host.header", offsetof(tokenbot_host_table, header));
    P("host.http", offsetof(tokenbot_host_table, http));
    P("host.log", offsetof(tokenbot_host_table, log));
    P("host.now_unix_ms", offsetof(tokenbot_host_table, now_unix_ms));
    P("host.totp", offsetof(tokenbot_host_table, totp));
    P("host.sleep_ms", offsetof(tokenbot_host_table, sleep_ms));
    P("HOST_TABLE_MIN_SIZE", TOKENBOT_HOST_TABLE_MIN_SIZE);
    P("sizeof plugin", sizeof(tokenbot_plugin_table));
    P("plugin.header", offsetof(tokenbot_plugin_table, header));
    P("plugin.id", offsetof(tokenbot_plugin_table, id));
    P("plugin.version", offsetof(tokenbot_plugin_table, version));
    P("plugin.manifest", offsetof(tokenbot_plugin_table, manifest));
    P("plugin.login", offsetof(tokenbot_plugin_table, login));
    P("plugin.verify", offsetof(tokenbot_plugin_table, verify));
    P("plugin.assisted_url", offsetof(tokenbot_plugin_table, assisted_url));
    P("plugin.assisted_finish", offsetof(tokenbot_plugin_table, assisted_finish));
    P("PLUGIN_TABLE_MIN_SIZE", TOKENBOT_PLUGIN_TABLE_MIN_SIZE);
    return 0;
}
"#;

fn expected() -> BTreeMap<String, String> {
    let n = |v: usize| v.to_string();
    [
        ("ENTRY_SYMBOL_LEN", n(ENTRY_SYMBOL.len())),
        ("ENTRY_SYMBOL", ENTRY_SYMBOL.to_owned()),
        ("HOST_MAGIC", HOST_MAGIC.to_string()),
        ("PLUGIN_MAGIC", PLUGIN_MAGIC.to_string()),
        ("ABI_MAJOR", ABI_MAJOR.to_string()),
        ("ABI_MINOR", ABI_MINOR.to_string()),
        ("STATUS_OK", Status::OK.0.to_string()),
        ("STATUS_ERROR", Status::ERROR.0.to_string()),
        ("STATUS_PANIC", Status::PANIC.0.to_string()),
        ("STATUS_BAD_INPUT", Status::BAD_INPUT.0.to_string()),
        ("STATUS_UNSUPPORTED", Status::UNSUPPORTED.0.to_string()),
        ("STATUS_DENIED", Status::DENIED.0.to_string()),
        ("STATUS_TOO_LARGE", Status::TOO_LARGE.0.to_string()),
        ("STATUS_TIMEOUT", Status::TIMEOUT.0.to_string()),
        ("sizeof status", n(size_of::<Status>())),
        ("sizeof header", n(size_of::<Header>())),
        ("header.magic", n(offset_of!(Header, magic))),
        ("header.struct_size", n(offset_of!(Header, struct_size))),
        ("header.abi_major", n(offset_of!(Header, abi_major))),
        ("header.abi_minor", n(offset_of!(Header, abi_minor))),
        ("sizeof bytes", n(size_of::<Bytes>())),
        ("bytes.ptr", n(offset_of!(Bytes, ptr))),
        ("bytes.len", n(offset_of!(Bytes, len))),
        ("sizeof sink", n(size_of::<Sink>())),
        ("sink.ctx", n(offset_of!(Sink, ctx))),
        ("sink.write", n(offset_of!(Sink, write))),
        ("sizeof host", n(size_of::<HostTable>())),
        ("host.header", n(offset_of!(HostTable, header))),
        ("host.http", n(offset_of!(HostTable, http))),
        ("host.log", n(offset_of!(HostTable, log))),
        ("host.now_unix_ms", n(offset_of!(HostTable, now_unix_ms))),
        ("host.totp", n(offset_of!(HostTable, totp))),
        ("host.sleep_ms", n(offset_of!(HostTable, sleep_ms))),
        ("HOST_TABLE_MIN_SIZE", n(HOST_TABLE_MIN_SIZE)),
        ("sizeof plugin", n(size_of::<PluginTable>())),
        ("plugin.header", n(offset_of!(PluginTable, header))),
        ("plugin.id", n(offset_of!(PluginTable, id))),
        ("plugin.version", n(offset_of!(PluginTable, version))),
        ("plugin.manifest", n(offset_of!(PluginTable, manifest))),
        ("plugin.login", n(offset_of!(PluginTable, login))),
        ("plugin.verify", n(offset_of!(PluginTable, verify))),
        (
            "plugin.assisted_url",
            n(offset_of!(PluginTable, assisted_url)),
        ),
        (
            "plugin.assisted_finish",
            n(offset_of!(PluginTable, assisted_finish)),
        ),
        ("PLUGIN_TABLE_MIN_SIZE", n(PLUGIN_TABLE_MIN_SIZE)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[test]
fn c_header_matches_rust_abi() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = tempfile_dir();
    let source = dir.join("probe.c");
    let binary = dir.join("probe");
    std::fs::write(&source, PROBE).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status()
        .expect("a C compiler (cc) is needed to check the header");
    assert!(status.success(), "the header does not compile");
    let output = Command::new(&binary).output().unwrap();
    let printed: BTreeMap<String, String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (k, v) = line.rsplit_once(' ').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(printed, expected());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenbot-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
