//! The `tokenbot` binary.

/// mimalloc instead of glibc's malloc: a token read allocates a few dozen small blocks and one
/// large future, and glibc consolidated its free lists on each large one (glibc's functions were
/// 28% of a token read's CPU through the router without a socket, and 10% of the whole loaded
/// process with sockets; `cargo bench -p tokenbot --bench api` under `perf record`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenbot::cli::main()
}
