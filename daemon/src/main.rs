//! The `tokenbot` binary.

/// jemalloc: frees from another thread (a request's buffers, the audit writer's entries) do not
/// take the allocating thread's arena lock, as glibc's malloc does (ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tokenbot::cli::main()
}
