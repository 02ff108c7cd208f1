//! Option parsing shared by the front ends: the C library's QEMU `-spice` style option string
//! and codec lists such as `h264,vp8`.

use std::path::PathBuf;

use crate::proto::VideoCodec;
use crate::shim::{Config, TlsListen};

/// `host:port`, with brackets around an IPv6 host.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses a codec list such as `h264,vp8` or `h264:vp8` (preference order).
pub fn parse_codecs(s: &str) -> Result<Vec<VideoCodec>, String> {
    s.split([',', ':'])
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            c.trim()
                .parse::<VideoCodec>()
                .map_err(|e| format!("{e} (known: mjpeg, vp8, h264, vp9, h265)"))
        })
        .collect()
}

/// Splits `key=value,key=value`; `,,` is a literal comma.
fn split_options(s: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                items.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    items.retain(|i| !i.is_empty());
    items
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(format!(
            "bad value for {key}: '{value}' (expected on or off)"
        )),
    }
}

/// `video-codecs`: `h264:vp8`, `h264;vp8` or spice-server's `gstreamer:h264;spice:mjpeg`.
fn parse_video_codecs(value: &str) -> Result<Vec<VideoCodec>, String> {
    let names: Vec<&str> = value
        .split([':', ';', ','])
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "gstreamer" && *t != "spice")
        .collect();
    let bad = |why: String| format!("bad value for video-codecs: '{value}' ({why})");
    if names.is_empty() {
        return Err(bad("no codec".into()));
    }
    parse_codecs(&names.join(",")).map_err(bad)
}

fn read_password_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password-file '{path}': {e}"))?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!(
            "password-file '{path}': the first line (the password) is empty"
        ));
    }
    Ok(first.to_owned())
}

fn read_password_secret(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(format!(
            "password-secret: environment variable '{name}' is empty"
        )),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "password-secret: environment variable '{name}' is not set"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "password-secret: environment variable '{name}' is not valid UTF-8"
        )),
    }
}

/// Turns an option string in QEMU `-spice` style (`addr=…,port=…,video-codecs=…`; the
/// `spice_shim_new` options) into a [`Config`]. `default_pipelines` gives the pipeline directory
/// when `pipelines=` is absent.
pub fn parse(options: &str, default_pipelines: impl FnOnce() -> PathBuf) -> Result<Config, String> {
    let mut addr: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut unix: Option<String> = None;
    let mut unix_flag = false;
    let mut codecs = None;
    let mut pipelines: Option<PathBuf> = None;
    let mut password: Option<String> = None;
    let mut password_source: Option<&'static str> = None;
    let mut disable_ticketing = false;
    let mut mm_latency: Option<u32> = None;
    let mut gl_timeout: Option<u32> = None;
    let mut tls_port: Option<u16> = None;
    let mut x509_dir: Option<PathBuf> = None;
    let mut tls_channels: Vec<String> = Vec::new();
    let mut plaintext_channels: Vec<String> = Vec::new();

    for item in split_options(options) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item.as_str(), None),
        };
        let need = |v: Option<&str>| -> Result<String, String> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(format!("option '{key}' needs a value ({key}=...)")),
            }
        };
        match key {
            "addr" => addr = Some(need(value)?),
            "port" => {
                let v = need(value)?;
                port = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("bad value for port: '{v}' (expected 0..65535)"))?,
                );
            }
            "unix" => {
                let v = need(value)?;
                match parse_bool(key, &v) {
                    // QEMU style: unix=on,addr=PATH.
                    Ok(on) => {
                        unix_flag = on;
                        if !on {
                            unix = None;
                        }
                    }
                    Err(_) => unix = Some(v),
                }
            }
            "tls-port" => {
                let v = need(value)?;
                tls_port =
                    Some(v.parse::<u16>().map_err(|_| {
                        format!("bad value for tls-port: '{v}' (expected 0..65535)")
                    })?);
            }
            "x509-dir" => x509_dir = Some(PathBuf::from(need(value)?)),
            // QEMU repeats them (tls-channels=main,tls-channels=display); ':' lists work too.
            "tls-channels" | "plaintext-channels" => {
                let v = need(value)?;
                let list = if key == "tls-channels" {
                    &mut tls_channels
                } else {
                    &mut plaintext_channels
                };
                list.extend(v.split(':').filter(|c| !c.is_empty()).map(str::to_owned));
            }
            "video-codecs" | "video-codec" => codecs = Some(parse_video_codecs(&need(value)?)?),
            "pipelines" => pipelines = Some(PathBuf::from(need(value)?)),
            "mm-latency" if value == Some("auto") => mm_latency = None,
            "mm-latency" | "gl-draw-timeout" => {
                let v = need(value)?;
                let ms = v
                    .parse::<u32>()
                    .ok()
                    .filter(|ms| (1..=10_000).contains(ms))
                    .ok_or_else(|| {
                        let auto = if key == "mm-latency" { " or auto" } else { "" };
                        format!(
                            "bad value for {key}: '{v}' (expected milliseconds, 1..10000{auto})"
                        )
                    })?;
                if key == "mm-latency" {
                    mm_latency = Some(ms);
                } else {
                    gl_timeout = Some(ms);
                }
            }
            "password-file" => {
                password = Some(read_password_file(&need(value)?)?);
                password_source = Some("password-file");
            }
            "password-secret" => {
                password = Some(read_password_secret(&need(value)?)?);
                password_source = Some("password-secret");
            }
            "disable-ticketing" => {
                disable_ticketing = match value {
                    None => true,
                    Some(v) => parse_bool(key, v)?,
                }
            }
            _ => return Err(format!("unknown option '{key}'")),
        }
    }

    if disable_ticketing && let Some(src) = password_source {
        return Err(format!(
            "disable-ticketing=on cannot be combined with {src} (a password)"
        ));
    }
    if unix_flag {
        // QEMU's spelling: addr= is the socket path.
        let Some(path) = addr.take() else {
            return Err("unix=on needs addr=PATH (the socket path)".into());
        };
        if port.is_some() {
            return Err(
                "port= cannot be combined with unix=on (addr= is the socket path); use unix=PATH,port=N"
                    .into(),
            );
        }
        unix = Some(path);
    }
    let tls = match (tls_port, x509_dir) {
        (Some(p), Some(dir)) => {
            let host = match &addr {
                Some(h) if !unix_flag => h.clone(),
                _ => "127.0.0.1".into(),
            };
            let mut t = TlsListen::new(join_host_port(&host, p), dir);
            t.set_channel_lists(&tls_channels, &plaintext_channels)
                .map_err(|e| format!("bad channel list: {e}"))?;
            Some(t)
        }
        (Some(_), None) => return Err("tls-port= needs x509-dir=DIR".into()),
        (None, Some(_)) => return Err("x509-dir= needs tls-port=N".into()),
        (None, None) => {
            if !tls_channels.is_empty() || !plaintext_channels.is_empty() {
                return Err("tls-channels= and plaintext-channels= need tls-port=".into());
            }
            None
        }
    };
    // As in QEMU: tls-port= without port= listens on the TLS port only.
    let tcp = if (unix.is_some() && addr.is_none() && port.is_none())
        || (tls.is_some() && port.is_none())
    {
        None
    } else {
        let host = addr.unwrap_or_else(|| "127.0.0.1".into());
        Some(join_host_port(&host, port.unwrap_or(5930)))
    };
    let defaults = Config::default();
    Ok(Config {
        tcp,
        unix: unix.map(PathBuf::from),
        codecs: codecs.unwrap_or(defaults.codecs),
        pipelines_dir: pipelines.unwrap_or_else(default_pipelines),
        password: if disable_ticketing { None } else { password },
        disable_ticketing,
        tls,
        spelling: crate::shim::OptionSpelling::OptionString,
        mm_latency_ms: mm_latency.or(defaults.mm_latency_ms),
        gl_done_timeout: gl_timeout
            .map(|ms| std::time::Duration::from_millis(u64::from(ms)))
            .unwrap_or(defaults.gl_done_timeout),
        ..defaults
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::channel_type::{CURSOR, DISPLAY, INPUTS, MAIN};

    fn parse_ok(s: &str) -> Config {
        parse(s, || PathBuf::from("/p")).unwrap()
    }

    #[test]
    fn mm_latency_option() {
        assert_eq!(parse_ok("").mm_latency_ms, None, "automatic by default");
        assert_eq!(parse_ok("mm-latency=auto").mm_latency_ms, None);
        assert_eq!(parse_ok("mm-latency=150").mm_latency_ms, Some(150));
        assert_eq!(
            parse_ok("mm-latency=150,mm-latency=auto").mm_latency_ms,
            None,
            "the last one wins"
        );
        let err = |s: &str| parse(s, || PathBuf::from("/p")).unwrap_err();
        assert_eq!(
            err("mm-latency=0"),
            "bad value for mm-latency: '0' (expected milliseconds, 1..10000 or auto)"
        );
        assert_eq!(
            err("gl-draw-timeout=0"),
            "bad value for gl-draw-timeout: '0' (expected milliseconds, 1..10000)"
        );
    }

    #[test]
    fn tls_options() {
        let c = parse_ok("port=5930,tls-port=5931,x509-dir=/x");
        let t = c.tls.unwrap();
        assert_eq!(t.addr, "127.0.0.1:5931");
        assert_eq!(t.x509_dir, PathBuf::from("/x"));
        assert_eq!(t.secure_channels, [MAIN, DISPLAY, INPUTS, CURSOR]);
        assert_eq!(c.tcp.as_deref(), Some("127.0.0.1:5930"));
        // As QEMU: a TLS port alone means no plain port.
        let c = parse_ok("addr=::1,tls-port=5931,x509-dir=/x");
        assert_eq!(c.tcp, None);
        assert_eq!(c.tls.unwrap().addr, "[::1]:5931");
        // Channel lists, QEMU style (repeated) or ':'-separated.
        let c = parse_ok(
            "port=1,tls-port=2,x509-dir=/x,plaintext-channels=inputs,plaintext-channels=cursor",
        );
        assert_eq!(c.tls.unwrap().secure_channels, [MAIN, DISPLAY]);
        let c = parse_ok(
            "port=1,tls-port=2,x509-dir=/x,tls-channels=main:display,plaintext-channels=default",
        );
        assert_eq!(c.tls.unwrap().secure_channels, [MAIN, DISPLAY]);
        let err = |s: &str| parse(s, || PathBuf::from("/p")).unwrap_err();
        assert_eq!(err("tls-port=2"), "tls-port= needs x509-dir=DIR");
        assert_eq!(err("x509-dir=/x"), "x509-dir= needs tls-port=N");
        assert!(err("tls-port=2,x509-dir=/x,tls-channels=usb").contains("unknown channel 'usb'"));
        assert!(
            err("tls-port=2,x509-dir=/x,tls-channels=main,plaintext-channels=main")
                .contains("main is in both")
        );
        assert!(err("tls-channels=main").contains("need tls-port="));
    }
}
