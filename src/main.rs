//! The `hearsay` binary; see [`hearsay::cli`].

use clap::Parser;

/// mimalloc instead of glibc's allocator: a replica allocates a little on
/// every request (bodies, clocks, answers); allocation was ~10 % of a
/// replica's CPU in the profile, and with mimalloc a replica spent ~12 % less
/// CPU per operation in an A/B run of the bench (50/50 mix, quiet machine).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = hearsay::cli::Cli::parse();
    match hearsay::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hearsay: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
