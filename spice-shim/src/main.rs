//! `spice-shim`: serve a test guest to SPICE clients, or feed a `spicedmabufsrc socket-path=…`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spice-shim",
    version,
    about = "Stream dmabuf scanouts to SPICE clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a SPICE server fed by the built-in animated test guest.
    Serve(spice_shim::serve::ServeOptions),
    /// Send the test guest to a `spicedmabufsrc socket-path=PATH` element.
    Feed(spice_shim::feed::FeedOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(opts) => spice_shim::serve::run(opts),
        Command::Feed(opts) => spice_shim::feed::run(opts).map(|report| {
            println!("{report}");
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spice-shim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
