//! `spice-shim qemu`: serves a running QEMU's display (`-display dbus`) to SPICE clients.

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
}

/// Runs until QEMU goes away or SIGINT/SIGTERM.
pub fn run(_opts: QemuOptions) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
