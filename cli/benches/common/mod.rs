//! Helpers shared by the benchmarks: machine facts for the report header and CPU accounting
//! from /proc.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// /proc times are in USER_HZ, which is 100 on Linux.
pub const TICK: Duration = Duration::from_millis(10);

/// utime + stime and minor page faults of a `/proc/.../stat` line.
pub fn stat_cpu_faults(stat: &str) -> (Duration, u64) {
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]: minflt is field 10, utime field 14, stime field 15.
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (TICK * (num(11) + num(12)) as u32, num(7))
}

/// CPU time all processes of the machine spent busy (not idle or iowait), from `/proc/stat`.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    TICK * busy as u32
}

pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn proc_line(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The first three fields of `/proc/loadavg`.
pub fn load_average() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("load average {} (1, 5, 15 min)", v.join(" "))
}

/// Median, p95 and max of millisecond samples (nearest rank).
pub fn summary(v: &mut [f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((rank(0.5), rank(0.95), v[v.len() - 1]))
}

/// Whether quick (smoke) mode was asked for through the environment: `SPICE_SHIM_BENCH_QUICK`
/// for every benchmark, or the benchmark's own older variable `own` (e.g. `E2E_BENCH_QUICK`).
/// A value of `0` means no.
pub fn quick_env(own: &str) -> bool {
    [own, "SPICE_SHIM_BENCH_QUICK"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| v != "0"))
}

/// CPU time (user + system) of one process, in total and per thread name (threads of the same
/// name summed).
#[derive(Debug, Clone, Default)]
pub struct ProcCpu {
    pub total: Duration,
    pub threads: std::collections::BTreeMap<String, Duration>,
}

/// The command name in a `/proc/.../stat` line (between the first `(` and the last `)`).
pub fn stat_comm(stat: &str) -> String {
    match (stat.find('('), stat.rfind(')')) {
        (Some(a), Some(b)) if a < b => stat[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// [`ProcCpu`] of process `pid` from /proc (zero if it is gone).
pub fn proc_cpu(pid: u32) -> ProcCpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let mut out = ProcCpu {
        total: stat_cpu_faults(&stat).0,
        threads: Default::default(),
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            *out.threads.entry(stat_comm(&stat)).or_default() += stat_cpu_faults(&stat).0;
        }
    }
    out
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a / b`, or NaN when `b` is 0 (printed as `-` by [`fmt`]).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// `v` with `decimals` decimals, or `-` if it is not a number.
pub fn fmt(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

/// CLOCK_MONOTONIC in seconds, as Python's `time.monotonic()` (and Rust's `Instant`).
pub fn mono() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The project's `pipelines/` directory.
pub fn pipelines_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines")
}

/// Polls the bus until `done()` holds; an error or an early EOS fails the case.
pub fn wait_until(
    pipeline: &gst::Pipeline,
    deadline: std::time::Instant,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    use gst::prelude::*;
    let bus = pipeline.bus().ok_or("pipeline without a bus")?;
    loop {
        if done() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err("timed out".into());
        }
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(2),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                return Err(format!(
                    "error from {}: {}",
                    e.src().map(|s| s.path_string()).unwrap_or_default(),
                    e.error()
                ));
            }
            Some(gst::MessageView::Eos(_)) => {
                return if done() {
                    Ok(())
                } else {
                    Err("EOS before the window was complete".into())
                };
            }
            _ => {}
        }
    }
}
