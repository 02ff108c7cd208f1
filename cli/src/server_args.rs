//! The server options that `serve` and `qemu` share: where to listen, which codecs and
//! pipelines, the password, the display delay.

use std::path::PathBuf;

use anyhow::Context;
use spice_shim_core::options::parse_codecs;
use spice_shim_core::shim::default_pipelines_dir;
use spice_shim_core::{Config, TlsListen};

/// `--mm-latency`: a fixed number of ms, or `None` for "auto".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmLatency(pub Option<u32>);

fn parse_mm_latency(s: &str) -> Result<MmLatency, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(MmLatency(None));
    }
    s.parse::<u32>()
        .ok()
        .filter(|ms| (1..=10_000).contains(ms))
        .map(|ms| MmLatency(Some(ms)))
        .ok_or_else(|| format!("expected milliseconds (1..=10000) or auto, got '{s}'"))
}

/// Options of the SPICE server, flattened into `serve` and `qemu`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:5930")]
    pub listen: String,
    /// Also listen on this unix socket (local clients get the dmabuf itself).
    #[arg(long)]
    pub unix: Option<PathBuf>,
    /// Video codecs in order of preference.
    #[arg(long, default_value = "h264,vp8,mjpeg")]
    pub video_codecs: String,
    /// Directory of encoder pipelines: `<codec>.d/*.pipeline` (tried in order), else
    /// `<codec>.pipeline` [default: the project's pipelines/].
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Client display delay in ms, or "auto": clients show each frame this long after it
    /// left the encoder (MJPEG frames arriving later are dropped). "auto" starts at 10 ms and
    /// adapts per client within 10..400 ms (raised when the client reports late frames,
    /// lowered slowly when it does not); a number fixes it.
    #[arg(long, default_value = "auto", value_name = "MS|auto", value_parser = parse_mm_latency)]
    pub mm_latency: MmLatency,
    /// Read the SPICE password from the first line of this file (instead of SPICE_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Also listen for TLS connections here (QEMU's tls-port); needs --x509-dir.
    #[arg(long, value_name = "ADDR:PORT", requires = "x509_dir")]
    pub tls_listen: Option<String>,
    /// Directory with ca-cert.pem, server-cert.pem and server-key.pem (as QEMU's x509-dir).
    #[arg(long, value_name = "DIR", requires = "tls_listen")]
    pub x509_dir: Option<PathBuf>,
    /// Channels that must use TLS (main, display, inputs, cursor, default) [default: all].
    #[arg(long, value_delimiter = ',', requires = "tls_listen")]
    pub tls_channels: Vec<String>,
    /// Channels that may still link on the plain port (main, display, inputs, cursor,
    /// default).
    #[arg(long, value_delimiter = ',', requires = "tls_listen")]
    pub plaintext_channels: Vec<String>,
    /// Allow a non-loopback --listen address with neither a password nor TLS (any host on the
    /// network may then connect).
    #[arg(long)]
    pub disable_ticketing: bool,
}

impl ServerArgs {
    /// The server configuration these options describe. The password comes from
    /// `--password-file`, else from `SPICE_PASSWORD` (unset or empty: no ticket check).
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let codecs =
            parse_codecs(&self.video_codecs).map_err(|e| anyhow::anyhow!("--video-codecs: {e}"))?;
        if self.disable_ticketing && self.password_file.is_some() {
            anyhow::bail!("--disable-ticketing cannot be combined with --password-file");
        }
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--password-file {}", path.display()))?;
                let first = text.lines().next().unwrap_or("").to_owned();
                if first.is_empty() {
                    anyhow::bail!(
                        "--password-file {}: the first line (the password) is empty",
                        path.display()
                    );
                }
                Some(first)
            }
            None if self.disable_ticketing => None,
            None => std::env::var("SPICE_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        };
        let tls = match (&self.tls_listen, &self.x509_dir) {
            (Some(addr), Some(dir)) => {
                let mut t = TlsListen::new(addr.clone(), dir.clone());
                t.set_channel_lists(&self.tls_channels, &self.plaintext_channels)
                    .map_err(anyhow::Error::msg)?;
                Some(t)
            }
            _ => None,
        };
        Ok(Config {
            tcp: Some(self.listen.clone()),
            unix: self.unix.clone(),
            codecs,
            pipelines_dir: self.pipelines.clone().unwrap_or_else(default_pipelines_dir),
            password,
            mm_latency_ms: self.mm_latency.0,
            disable_ticketing: self.disable_ticketing,
            tls,
            ..Config::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mm_latency_help_matches_the_core() {
        use spice_shim_core::latency::{MAX_MS, MIN_MS, START_MS};
        assert_eq!(
            (START_MS, MIN_MS, MAX_MS),
            (10, 10, 400),
            "update the --mm-latency help"
        );
    }

    #[test]
    fn mm_latency_values() {
        assert_eq!(parse_mm_latency("auto"), Ok(MmLatency(None)));
        assert_eq!(parse_mm_latency("150"), Ok(MmLatency(Some(150))));
        assert!(parse_mm_latency("0").is_err());
        assert!(parse_mm_latency("10001").is_err());
        assert!(parse_mm_latency("fast").is_err());
    }
}
