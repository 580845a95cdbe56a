//! The `tokenbot` binary.

/// mimalloc instead of glibc's malloc: a token read allocates a few dozen small blocks and one
/// large future, and glibc consolidated its free lists on each large one (about a fifth of the
/// CPU of a loaded read; `cargo bench -p tokenbot --bench api`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenbot::cli::main()
}
