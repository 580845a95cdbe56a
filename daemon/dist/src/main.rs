//! `tokenbot-dist OUT_DIR`: writes what a package ships beside the `tokenbot` binary, generated
//! from its command-line definitions so that they never drift from it:
//! - `OUT_DIR/completions/`: `tokenbot.bash`, `_tokenbot` (zsh), `tokenbot.fish`,
//!   `tokenbot.elv` (elvish) and `_tokenbot.ps1` (PowerShell);
//! - `OUT_DIR/man/`: `tokenbot.1`, and `tokenbot-<command>.1` for each command and subcommand
//!   (`tokenbot-user-add.1`).
//!
//! Run it as `cargo run -p tokenbot-dist -- OUT_DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: tokenbot-dist OUT_DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&out)) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenbot-dist: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write every completion script and man page under `out`; the files written.
fn write_all(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut command = tokenbot::cli::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut command,
            "tokenbot",
            &completions,
        )?);
    }
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    man_pages(tokenbot::cli::command(), &["tokenbot"], &man, &mut written)?;
    Ok(written)
}

/// The page of `command`, whose words on the command line are `words` (`["tokenbot", "user",
/// "add"]`, page `tokenbot-user-add.1`), then those of its subcommands.
fn man_pages(
    command: clap::Command,
    words: &[&str],
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let command = command
        .display_name(words.join("-"))
        .bin_name(words.join(" "))
        .version(env!("CARGO_PKG_VERSION"));
    let path = dir.join(format!("{}.1", words.join("-")));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .source(format!("tokenbot {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)?;
    std::fs::write(&path, page)?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut sub_words = words.to_vec();
        sub_words.push(sub.get_name());
        man_pages(sub.clone(), &sub_words, dir, written)?;
    }
    Ok(())
}
