//! `tokenbot-dist` writes a completion script per shell and a man page per command, from the
//! same definitions the binary parses.

use std::process::Command;

#[test]
fn completions_and_man_pages_cover_every_command() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tokenbot-dist"))
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let completions = out.path().join("completions");
    let bash = std::fs::read_to_string(completions.join("tokenbot.bash")).unwrap();
    for file in [
        "_tokenbot",
        "tokenbot.fish",
        "tokenbot.elv",
        "_tokenbot.ps1",
    ] {
        assert!(completions.join(file).is_file(), "{file}");
    }
    // The bash script parses, and offers every command and a nested one's flags.
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(completions.join("tokenbot.bash"))
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n");
    let commands = [
        "serve", "init", "user", "vault", "refresh", "token", "logs", "plugins",
    ];
    for command in commands {
        assert!(bash.contains(command), "{command} in the bash completion");
        let page = out.path().join("man").join(format!("tokenbot-{command}.1"));
        assert!(page.is_file(), "{}", page.display());
    }
    assert!(bash.contains("--from-json"));
    let add = std::fs::read_to_string(out.path().join("man/tokenbot-user-add.1")).unwrap();
    assert!(add.contains(".TH tokenbot-user-add 1"), "{add}");
    assert!(
        add.contains("\\fBtokenbot user add\\fR"),
        "the synopsis names the full command"
    );
    assert!(add.contains("from\\-json"), "{add}");
    let top = std::fs::read_to_string(out.path().join("man/tokenbot.1")).unwrap();
    assert!(top.contains(env!("CARGO_PKG_VERSION")), "{top}");
}

#[test]
fn without_an_output_directory_it_says_how_to_run_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_tokenbot-dist"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: tokenbot-dist OUT_DIR"));
}
