//! Option parsing shared by the front ends: the C library's QEMU `-spice` style option string
//! and codec lists such as `h264,vp8`.

use std::path::PathBuf;

use crate::proto::VideoCodec;
use crate::shim::Config;

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
            "video-codecs" | "video-codec" => codecs = Some(parse_video_codecs(&need(value)?)?),
            "pipelines" => pipelines = Some(PathBuf::from(need(value)?)),
            "mm-latency" | "gl-draw-timeout" => {
                let v = need(value)?;
                let ms = v
                    .parse::<u32>()
                    .ok()
                    .filter(|ms| (1..=10_000).contains(ms))
                    .ok_or_else(|| {
                        format!("bad value for {key}: '{v}' (expected milliseconds, 1..10000)")
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
    let tcp = if unix.is_some() && addr.is_none() && port.is_none() {
        None
    } else {
        let host = addr.unwrap_or_else(|| "127.0.0.1".into());
        let port = port.unwrap_or(5930);
        Some(if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    };
    let defaults = Config::default();
    Ok(Config {
        tcp,
        unix: unix.map(PathBuf::from),
        codecs: codecs.unwrap_or(defaults.codecs),
        pipelines_dir: pipelines.unwrap_or_else(default_pipelines),
        password: if disable_ticketing { None } else { password },
        mm_latency_ms: mm_latency.unwrap_or(defaults.mm_latency_ms),
        gl_done_timeout: gl_timeout
            .map(|ms| std::time::Duration::from_millis(u64::from(ms)))
            .unwrap_or(defaults.gl_done_timeout),
        ..defaults
    })
}
