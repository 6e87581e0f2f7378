//! The `hearsay` binary; see [`hearsay::cli`].

use clap::Parser;

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
