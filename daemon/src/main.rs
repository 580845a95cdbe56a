//! The `tokenbot` binary.

/// jemalloc: frees from another thread (a request's buffers, the audit writer's entries) do not
/// take the allocating thread's arena lock, as glibc's malloc does (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Every TLS client of the process (the brokers' HTTP client, the Postgres mirror) uses rustls'
    // `ring` provider; reqwest is built without one of its own (Cargo.toml says why).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokenbot::cli::main()
}
