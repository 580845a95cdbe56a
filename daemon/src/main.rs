//! The `tokenbot` binary.

fn main() -> std::process::ExitCode {
    tokenbot::cli::main()
}
