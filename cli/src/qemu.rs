//! `spice-shim qemu`: serves a running QEMU's display (`-display dbus`) to SPICE clients.
//!
//! The SPICE server starts first (clients may connect while QEMU is not there yet), then the
//! front end (`spice-shim-qemu`) waits for QEMU on its bus and feeds the server until QEMU goes
//! away or SIGINT/SIGTERM. The exit report is the one `serve` prints, plus one line of the 2D
//! path's counters (`qemu: updates …`, see `FrontendStats::summary_line`). `--stats-every`
//! prints the `stats …` lines `serve` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use spice_shim_core::{Shim, log};
use spice_shim_qemu::{Exit, Frontend, Target};

use crate::serve::{StatsPrinter, parse_interval};
use crate::server_args::ServerArgs;

/// Options of `spice-shim qemu`.
#[derive(Debug, Clone, clap::Args)]
pub struct QemuOptions {
    /// D-Bus address of the bus QEMU runs on (`-display dbus,addr=ADDRESS`) [default: the
    /// session bus].
    #[arg(long)]
    pub dbus: Option<String>,
    /// QEMU console to show.
    #[arg(long, default_value_t = 0)]
    pub console: u32,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the counters on stdout every this many seconds (0 = never), one `stats …` line
    /// each, as `spice-shim serve --stats-every` does.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS", value_parser = parse_interval)]
    pub stats_every: f64,
}

/// Prints `stats …` lines from a thread until `stop` is set (nothing when `seconds` is 0).
fn spawn_stats(
    shim: &Arc<Shim>,
    seconds: f64,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if seconds <= 0.0 {
        return Ok(None);
    }
    let (shim, stop) = (shim.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("qemu-stats".into())
        .spawn(move || {
            let mut printer = StatsPrinter::new(seconds);
            while !stop.load(Ordering::Relaxed) {
                printer.poll(&shim);
                let nap = printer.until_due().unwrap_or_default();
                std::thread::sleep(nap.clamp(Duration::from_millis(1), Duration::from_millis(50)));
            }
        })
        .context("starting the stats thread")?;
    Ok(Some(thread))
}

/// Runs until QEMU goes away or SIGINT/SIGTERM, then prints the counters.
pub fn run(opts: QemuOptions) -> anyhow::Result<()> {
    log::set_verbose(true);
    let config = opts.server.to_config()?;
    let frontend = Frontend::new();
    let shim = Arc::new(
        Shim::start(config, frontend.completion_callback()).context("starting the server")?,
    );

    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let signals_handle = signals.handle();
    let stopper = frontend.stopper();
    let signal_thread = std::thread::Builder::new()
        .name("qemu-signals".into())
        .spawn(move || {
            for (n, signal) in signals.forever().enumerate() {
                if n == 0 {
                    stopper.stop();
                } else {
                    // A second signal while stopping: give up at once.
                    eprintln!("spice-shim: signal {signal} again: exiting without cleanup");
                    std::process::exit(128 + signal);
                }
            }
        })
        .context("starting the signal thread")?;

    let stats_stop = Arc::new(AtomicBool::new(false));
    let stats_thread = spawn_stats(&shim, opts.stats_every, &stats_stop)?;
    let target = Target {
        address: opts.dbus.clone(),
        console: opts.console,
    };
    let outcome = frontend.run(shim.clone(), &target);
    signals_handle.close();
    let _ = signal_thread.join();
    stats_stop.store(true, Ordering::Relaxed);
    if let Some(t) = stats_thread {
        let _ = t.join();
    }
    if matches!(outcome, Ok(Exit::Stopped)) {
        log::info("stopping");
    }

    let shim = Arc::into_inner(shim)
        .context("the QEMU front end still holds the server; cannot shut it down")?;
    let stats = shim.shutdown();
    print!("{stats}");
    // The 2D path's counters (QEMU's updates, the copies, frames drawn, merged updates).
    println!("{}", frontend.stats().summary_line());
    outcome.with_context(|| format!("QEMU on {}", describe(&target)))?;
    if stats.ledger.returned != stats.ledger.drawn {
        anyhow::bail!(
            "cookie mismatch: {} drawn, {} returned",
            stats.ledger.drawn,
            stats.ledger.returned
        );
    }
    Ok(())
}

fn describe(target: &Target) -> String {
    match &target.address {
        Some(a) => format!("{a}, console {}", target.console),
        None => format!("the session bus, console {}", target.console),
    }
}
