//! `spice-shim`: serve a test guest or a QEMU to SPICE clients, or feed a
//! `spicedmabufsrc socket-path=…`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spice_shim_cli::{feed, qemu, serve};

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
    Serve(serve::ServeOptions),
    /// Serve a running QEMU's display (`-display dbus`) to SPICE clients.
    Qemu(qemu::QemuOptions),
    /// Send the test guest to a `spicedmabufsrc socket-path=PATH` element.
    Feed(feed::FeedOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // This program owns its process: keep glibc from holding what departed clients freed.
    spice_shim_core::trim::pin_thresholds();
    let result = match cli.command {
        Command::Serve(opts) => serve::run(opts),
        Command::Qemu(opts) => qemu::run(opts),
        Command::Feed(opts) => feed::run(opts).map(|report| {
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
