//! CPU time and memory of a process from /proc: utime + stime of the process, the time on a
//! CPU of each of its threads (by thread name; from `schedstat`, in ns, since a thread that
//! uses a few ms per second would mostly round to 0 ticks of 10 ms), VmRSS, RssAnon and VmHWM.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::common::stat_cpu_faults;

/// Where a thread of the server belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The main thread: the test guest drawing, `gl_scanout`, `gl_draw`.
    Guest,
    /// GStreamer's threads: the source's streaming thread (conversion, encoding, fan-out of
    /// the access units to the clients' queues) and the encoder's and converter's workers.
    Encoder,
    /// The threads of the clients' connections: readers and writers of every channel.
    Network,
    /// The server's other threads (accepting connections, supervisor, cookie completion, bus
    /// watches).
    Other,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Guest, Part::Encoder, Part::Network, Part::Other];

    pub fn name(self) -> &'static str {
        match self {
            Part::Guest => "guest",
            Part::Encoder => "encoder",
            Part::Network => "network",
            Part::Other => "other",
        }
    }

    /// The part a thread called `name` (as /proc shows it, at most 15 bytes) belongs to.
    fn of(name: &str, main: bool) -> Part {
        const NETWORK: [&str; 5] = [
            "shim-conn",
            "shim-main-writ",
            "shim-display-w",
            "shim-cursor-wr",
            "shim-inputs-wr",
        ];
        if main {
            Part::Guest
        } else if NETWORK.iter().any(|p| name.starts_with(p)) {
            Part::Network
        } else if name.starts_with("shim-") {
            Part::Other
        } else {
            Part::Encoder
        }
    }
}

/// CPU times of one process at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProcCpu {
    /// The whole process (including threads that have exited).
    pub total: Duration,
    /// Every live thread: tid → (name, time on a CPU).
    pub threads: HashMap<u32, (String, Duration)>,
}

/// Time on a CPU of one thread: the first field of `schedstat` (ns), or utime + stime of its
/// `stat` line where the kernel has no schedstat.
fn thread_cpu(task: &std::path::Path, stat: &str) -> Duration {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| stat_cpu_faults(stat).0)
}

/// utime + stime of process `pid` (`self` for this one) and the CPU time of each of its
/// threads.
pub fn proc_cpu(pid: &str) -> ProcCpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let mut out = ProcCpu {
        total: stat_cpu_faults(&stat).0,
        threads: HashMap::new(),
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = task.path();
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            out.threads.insert(
                tid,
                (crate::common::stat_comm(&stat), thread_cpu(&path, &stat)),
            );
        }
    }
    out
}

/// CPU used between two snapshots of the server `pid`, per part and per thread name (threads
/// of the same name summed, with how many there were).
#[derive(Debug, Clone, Default)]
pub struct CpuSplit {
    pub total: Duration,
    pub parts: BTreeMap<Part, Duration>,
    pub names: BTreeMap<(Part, String), (Duration, usize)>,
}

pub fn split(pid: u32, before: &ProcCpu, after: &ProcCpu) -> CpuSplit {
    let mut out = CpuSplit {
        total: after.total.saturating_sub(before.total),
        ..CpuSplit::default()
    };
    for (tid, (name, cpu)) in &after.threads {
        let start = before.threads.get(tid).map(|(_, c)| *c).unwrap_or_default();
        let d = cpu.saturating_sub(start);
        let part = Part::of(name, *tid == pid);
        *out.parts.entry(part).or_default() += d;
        let e = out.names.entry((part, name.clone())).or_default();
        e.0 += d;
        e.1 += 1;
    }
    out
}

/// Memory figures of a process (kB), from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub hwm_kb: u64,
}

pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kb: kb("VmRSS"),
        anon_kb: kb("RssAnon"),
        hwm_kb: kb("VmHWM"),
    }
}

/// CPU time of the threads whose name starts with `prefix` between two snapshots.
pub fn threads_named(prefix: &str, before: &ProcCpu, after: &ProcCpu) -> Duration {
    after
        .threads
        .iter()
        .filter(|(_, (name, _))| name.starts_with(prefix))
        .map(|(tid, (_, cpu))| {
            let start = before.threads.get(tid).map(|(_, c)| *c).unwrap_or_default();
            cpu.saturating_sub(start)
        })
        .sum()
}
