//! The tables of the scaling benchmark: ratios first, then absolute figures, then where the
//! CPU went by thread name and the exit reports.

use spice_shim_core::proto::VideoCodec;

use crate::procfs::Part;
use crate::{Group, Outcome, ms};

/// A markdown table with right-aligned numbers and padded columns.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { f(a / b, 2) } else { "-".into() }
}

fn mib(kb: f64) -> String {
    f(kb / 1024.0, 1)
}

/// (min, mean) of the frames each client received in the window.
fn frames_min_mean(o: &Outcome) -> (u64, f64) {
    let frames: Vec<u64> = o.received.iter().map(|(_, f, _)| *f).collect();
    let min = frames.iter().copied().min().unwrap_or(0);
    let mean = frames.iter().sum::<u64>() as f64 / frames.len().max(1) as f64;
    (min, mean)
}

/// Mean bytes per client in the window.
fn bytes_per_client(o: &Outcome) -> f64 {
    o.received.iter().map(|(_, _, b)| *b as f64).sum::<f64>() / o.received.len().max(1) as f64
}

/// The run of `group` at the same size as `o` that the ratios are taken against: one h264
/// client.
fn baseline<'a>(all: &'a [Outcome], o: &Outcome) -> Option<&'a Outcome> {
    all.iter().find(|b| {
        b.case.group == o.case.group
            && (b.case.width, b.case.height) == (o.case.width, o.case.height)
            && b.case.clients == [VideoCodec::H264]
    })
}

pub fn print(all: &[Outcome], pattern: &str) {
    let clients: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.case.group == Group::Clients)
        .collect();
    let codecs: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.case.group == Group::Codecs)
        .collect();
    println!("test guest pattern: {pattern}");
    let others: Vec<f64> = all.iter().map(|o| o.others_pct).collect();
    if !others.is_empty() {
        let mean = others.iter().sum::<f64>() / others.len() as f64;
        let max = others.iter().copied().fold(0.0, f64::max);
        println!(
            "other load: other processes used {} % of all cores on average in the measured \
             windows, at most {} % (column `others %`)",
            f(mean, 0),
            f(max, 0)
        );
    }
    println!();
    if !clients.is_empty() {
        print_clients(all, &clients);
    }
    if !codecs.is_empty() {
        print_codecs(all, &codecs);
    }
    print_threads(all);
    print_reports(all);
}

fn print_clients(all: &[Outcome], runs: &[&Outcome]) {
    println!("### N clients of one h264 stream: ratios to 1 client at the same size\n");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|o| {
            let b = baseline(all, o);
            let r = |g: fn(&Outcome) -> f64| b.map_or("-".into(), |b| ratio(g(o), g(b)));
            vec![
                o.case.size(),
                o.case.clients.len().to_string(),
                r(Outcome::cpu_ms_per_frame),
                r(Outcome::server_ms_per_frame),
                r(Outcome::encoder_ms_per_encoded),
                r(|o| o.part_ms_per_frame(Part::Network)),
                r(Outcome::network_us_per_frame_sent),
                r(|o| o.rss_kb),
                r(|o| o.anon_kb),
                r(|o| o.hwm_kb as f64),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "size",
                "clients",
                "CPU/frame",
                "without guest",
                "encoder CPU/encoded frame",
                "network CPU/frame",
                "network CPU/frame sent",
                "VmRSS",
                "RssAnon",
                "VmHWM",
            ],
            &rows
        )
    );
    println!(
        "\nCPU/frame: the server process's user + system time per frame drawn in the window; \
         without guest: minus its main thread,\nwhich draws the test guest's frames (the \
         workload, not the server's cost).\n"
    );

    println!("### N clients: frames and bytes in the window\n");
    let rows: Vec<Vec<String>> = runs.iter().map(|o| frame_row(o)).collect();
    print!(
        "{}",
        table(
            &[
                "case",
                "drawn",
                "drawn fps (run)",
                "encoded",
                "encoded/drawn (run)",
                "frames/client min",
                "frames/client mean",
                "dropped (run)",
                "KiB/client",
                "kbit/s/client",
            ],
            &rows
        )
    );
    println!(
        "\ndrawn: frames drawn in the window (the run's count × window / run time, or the frames \
         encoded if more). encoded: the most frames\na client received in the window. \
         encoded/drawn and dropped (for all clients together) come from the exit report and \
         cover the whole run.\n"
    );

    println!("### N clients: server CPU per frame drawn (ms) and memory\n");
    let rows: Vec<Vec<String>> = runs.iter().map(|o| cpu_row(o)).collect();
    print!("{}", table(&cpu_headers(), &rows));
    println!("\n{CPU_NOTE}\n");
}

fn frame_row(o: &Outcome) -> Vec<String> {
    let codec = o.case.clients[0];
    let (min, mean) = frames_min_mean(o);
    let bytes = bytes_per_client(o);
    let encoded_run = o.encoded(codec);
    vec![
        o.case.label(),
        f(o.drawn_window, 0),
        f(o.stats.drawn as f64 / o.run_secs, 1),
        o.encoded_window(codec).to_string(),
        ratio(encoded_run as f64, o.stats.drawn as f64),
        min.to_string(),
        f(mean, 1),
        o.dropped().to_string(),
        f(bytes / 1024.0, 0),
        f(bytes * 8.0 / 1000.0 / o.window_secs, 0),
    ]
}

const CPU_NOTE: &str = "guest: the main thread (drawing, gl_scanout, gl_draw). encoder: GStreamer's \
threads (conversion, encoding, handing the access units to the clients' queues). network: the \
connections' reader and writer threads.\nother: the server's other threads. encoder ms/encoded: \
encoder CPU per frame encoded in the window (all codecs). network µs/sent: network CPU per frame \
sent to one client.\ncores: the server's CPU time ÷ wall time. clients: the CPU of the \
benchmark's client threads. others %: share of all cores other processes used.";

fn cpu_headers() -> Vec<&'static str> {
    vec![
        "case",
        "CPU/frame",
        "without guest",
        "guest",
        "encoder",
        "network",
        "other",
        "encoder ms/encoded",
        "network µs/sent",
        "cores",
        "VmRSS MiB",
        "RssAnon MiB",
        "VmHWM MiB",
        "clients ms/frame",
        "others %",
    ]
}

fn cpu_row(o: &Outcome) -> Vec<String> {
    vec![
        o.case.label(),
        f(o.cpu_ms_per_frame(), 2),
        f(o.server_ms_per_frame(), 2),
        f(o.part_ms_per_frame(Part::Guest), 2),
        f(o.part_ms_per_frame(Part::Encoder), 2),
        f(o.part_ms_per_frame(Part::Network), 2),
        f(o.part_ms_per_frame(Part::Other), 2),
        f(o.encoder_ms_per_encoded(), 2),
        f(o.network_us_per_frame_sent(), 1),
        f(o.cores(), 2),
        mib(o.rss_kb),
        mib(o.anon_kb),
        mib(o.hwm_kb as f64),
        f(ms(o.clients_cpu) / o.drawn_window.max(1.0), 2),
        f(o.others_pct, 0),
    ]
}

fn print_codecs(all: &[Outcome], runs: &[&Outcome]) {
    println!("### One client per codec: ratios to h264 alone at the same size\n");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|o| {
            let b = baseline(all, o);
            let prev = previous(all, o);
            let base_cpu = b.map_or(0.0, Outcome::server_ms_per_frame);
            let base_rss = b.map_or(0.0, |b| b.rss_kb);
            let added_cpu = prev.map_or(f64::NAN, |p| {
                (o.server_ms_per_frame() - p.server_ms_per_frame()) / base_cpu
            });
            let added_rss = prev.map_or(f64::NAN, |p| (o.rss_kb - p.rss_kb) / base_rss);
            vec![
                o.case.size(),
                o.case.codecs_label(),
                b.map_or("-".into(), |b| {
                    ratio(o.cpu_ms_per_frame(), b.cpu_ms_per_frame())
                }),
                b.map_or("-".into(), |b| {
                    ratio(o.server_ms_per_frame(), b.server_ms_per_frame())
                }),
                f(added_cpu, 2),
                b.map_or("-".into(), |b| {
                    ratio(
                        o.part_ms_per_frame(Part::Encoder),
                        b.part_ms_per_frame(Part::Encoder),
                    )
                }),
                b.map_or("-".into(), |b| ratio(o.rss_kb, b.rss_kb)),
                f(added_rss, 2),
                b.map_or("-".into(), |b| ratio(o.hwm_kb as f64, b.hwm_kb as f64)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "size",
                "codecs",
                "CPU/frame",
                "without guest",
                "added by the last codec",
                "encoder CPU/frame",
                "VmRSS",
                "VmRSS added by the last codec",
                "VmHWM",
            ],
            &rows
        )
    );
    println!(
        "\nwithout guest: the server's CPU per frame minus the test guest's drawing. added by the \
         last codec: that figure for this row − the row\nwith one codec less, ÷ h264 alone: 0.80 \
         means the extra encoder costs 80 % of what the server spends on h264 alone.\n"
    );

    println!("### One client per codec: frames and bytes in the window\n");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|o| {
            let per_codec = |g: &dyn Fn(VideoCodec) -> String| {
                o.case
                    .codecs_used()
                    .iter()
                    .map(|&c| format!("{} {}", c.name(), g(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let kib = |c: VideoCodec| {
                let b: u64 = o
                    .received
                    .iter()
                    .filter(|(x, _, _)| *x == c)
                    .map(|(_, _, b)| *b)
                    .sum();
                f(b as f64 / 1024.0, 0)
            };
            vec![
                o.case.label(),
                f(o.drawn_window, 0),
                per_codec(&|c| o.encoded_window(c).to_string()),
                per_codec(&|c| ratio(o.encoded(c) as f64, o.stats.drawn as f64)),
                o.dropped().to_string(),
                per_codec(&kib),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "case",
                "drawn",
                "encoded",
                "encoded/drawn (run)",
                "dropped (run)",
                "KiB/client",
            ],
            &rows
        )
    );
    println!();

    println!("### One client per codec: server CPU per frame drawn (ms) and memory\n");
    let rows: Vec<Vec<String>> = runs.iter().map(|o| cpu_row(o)).collect();
    print!("{}", table(&cpu_headers(), &rows));
    println!();
}

/// The codecs run with one codec less than `o`, at the same size.
fn previous<'a>(all: &'a [Outcome], o: &Outcome) -> Option<&'a Outcome> {
    let n = o.case.clients.len();
    if n < 2 {
        return None;
    }
    all.iter().find(|p| {
        p.case.group == o.case.group
            && (p.case.width, p.case.height) == (o.case.width, o.case.height)
            && p.case.clients[..] == o.case.clients[..n - 1]
    })
}

/// Where the CPU went, by thread name: ms per frame drawn and how many threads had the name.
fn print_threads(all: &[Outcome]) {
    println!("### Server CPU by thread name (ms per frame drawn; thread count)\n");
    for o in all {
        let mut names: Vec<_> = o.cpu.names.iter().collect();
        names.sort_by_key(|(_, (d, _))| std::cmp::Reverse(*d));
        let shown: Vec<String> = names
            .iter()
            .filter(|(_, (d, _))| !d.is_zero())
            .map(|((part, name), (d, n))| {
                format!(
                    "{name} [{}] {} ({n})",
                    part.name(),
                    f(ms(*d) / o.drawn_window.max(1.0), 2)
                )
            })
            .collect();
        println!(
            "- {}: {}",
            o.case.label(),
            if shown.is_empty() {
                "-".into()
            } else {
                shown.join(", ")
            }
        );
    }
    println!();
}

/// The exit report of every run, on one line.
fn print_reports(all: &[Outcome]) {
    println!("### Exit reports (whole runs)\n");
    println!("```");
    for o in all {
        let encoded: Vec<String> = o
            .stats
            .encoded
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let sent: Vec<u64> = o.stats.clients.iter().map(|c| c.sent).collect();
        println!(
            "{}: {:.1} s, drawn {} returned {}, encoded {}, sent per client {}..{}, dropped {}{}",
            o.case.label(),
            o.run_secs,
            o.stats.drawn,
            o.stats.returned,
            encoded.join(", "),
            sent.iter().min().unwrap_or(&0),
            sent.iter().max().unwrap_or(&0),
            o.dropped(),
            if o.problems.is_empty() {
                String::new()
            } else {
                format!("; PROBLEMS: {}", o.problems.join("; "))
            }
        );
    }
    println!("```");
}
