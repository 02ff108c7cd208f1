//! End-to-end tests of the display latency (`--mm-latency`, see `spice_shim_core::latency`)
//! with a real spice-gtk client: spice-client-glib 0.42 through python3-gi
//! (`tests/latency_client.py`), which reads the test guest's frame counter off its primary
//! surface on every `display-invalidate`. spice-gtk's own debug output (`SPICE_DEBUG=1`) gives
//! each frame's margin on arrival ("video margin: N", "stream data too late by N ms").
//!
//! Not speed tests: they check that the automatic latency stays low and still shows every
//! frame, that it rises for a client whose frames come late, and that a fixed latency stays
//! fixed.

mod support;
mod util;

use std::process::Command;
use std::time::Duration;

use support::Server;
use util::{ChildGuard, TempDir};

const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/latency_client.py");
const GUEST: &[&str] = &["--pattern", "counter", "--size", "640x480", "--fps", "30"];

/// What the client printed.
struct ClientRun {
    /// Counters of the new pictures, in order.
    counters: Vec<u32>,
    invalidates: u64,
    unreadable: u64,
    stalls: usize,
    /// spice-gtk's margin of each frame on arrival (ms), from "video margin: N".
    margins: Vec<i32>,
    /// Frames that arrived after their time ("stream data too late").
    late: usize,
    logs: String,
}

/// Runs the client against `server` for `secs` seconds with `extra` arguments.
fn run_client(dir: &TempDir, server: &Server, secs: u32, extra: &[&str]) -> ClientRun {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} (with python3-gi and gir1.2-spiceclientglib-2.0) is needed"
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg(CLIENT)
        .args(["--host", "127.0.0.1", "--port", &server.port().to_string()])
        .args(["--duration", &secs.to_string()])
        .args(extra)
        .env("SPICE_DEBUG", "1");
    let mut client = ChildGuard::spawn("client", cmd, dir);
    client.expect_success(Duration::from_secs(u64::from(secs) + 30));
    let stdout = client.stdout();
    let stderr = client.stderr();
    let mut run = ClientRun {
        counters: Vec::new(),
        invalidates: 0,
        unreadable: 0,
        stalls: 0,
        margins: Vec::new(),
        late: 0,
        logs: format!("--- client stdout ---\n{}", util::tail(&stdout, 3000)),
    };
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["FRAME", _, c, _] => run.counters.push(c.parse().expect("counter")),
            ["STALL", ..] => run.stalls += 1,
            ["STATS", inv, _, _, unr] => {
                run.invalidates = inv.parse().expect("invalidates");
                run.unreadable = unr.parse().expect("unreadable");
            }
            _ => {}
        }
    }
    for line in stderr.lines() {
        if let Some(m) = line
            .split("video margin: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse::<i32>().ok())
        {
            run.margins.push(m);
        }
        if line.contains("stream data too late by") {
            run.late += 1;
        }
    }
    run
}

fn median(v: &[i32]) -> i32 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// `display latency <from> -> <to> ms` lines of the server: the `to`s.
fn raises(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter(|l| l.contains("display latency ") && l.contains(" -> "))
        .filter_map(|l| {
            let to = l.split(" -> ").nth(1)?;
            to.split(" ms").next()?.parse().ok()
        })
        .collect()
}

/// The number in `<prefix>N ms` of the server's last such line.
fn last_ms(stderr: &str, prefix: &str) -> Option<u32> {
    stderr.lines().rev().find_map(|l| {
        let rest = l.split(prefix).nth(1)?;
        rest.split(" ms").next()?.parse().ok()
    })
}

/// The default (automatic) latency: the client gets every frame the server sent, each shown
/// soon after it arrived, and the server logs the latency it settled on.
#[test]
fn automatic_latency_shows_every_frame_and_settles() {
    let dir = TempDir::new("latency-auto");
    // 300 frames (10 s), then idle: the last frames are not cut off by the client leaving.
    let mut args = GUEST.to_vec();
    args.extend(["--frames", "300"]);
    let server = Server::start(&dir, &args, None);
    let run = run_client(&dir, &server, 13, &[]);
    let exit = server.stop();
    let report = || format!("{}\n{}", exit.report(), run.logs);
    exit.assert_cookies_balanced(300);
    let [client] = exit.stats.clients.as_slice() else {
        panic!("expected one client line\n{}", report());
    };

    // Every frame sent was put on the client's surface, except the idle follow-up frame (a
    // near-empty frame that only completes the last one in spice-gtk's H.264 parser).
    assert!(
        run.invalidates + 1 >= client.sent && client.sent > 200,
        "{} frames sent, {} shown\n{}",
        client.sent,
        run.invalidates,
        report()
    );
    assert_eq!(run.unreadable, 0, "unreadable counters\n{}", report());
    // In order, without a gap, up to the last frame drawn.
    assert_eq!(run.counters.last(), Some(&299), "{}", report());
    for w in run.counters.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a frame is missing\n{}", report());
    }

    let stderr = &exit.stderr;
    assert!(
        stderr.contains("display latency automatic, starting at 10 ms"),
        "{}",
        report()
    );
    let settled = last_ms(stderr, "display latency settled at ")
        .unwrap_or_else(|| panic!("no `display latency settled at` line\n{}", report()));
    let end = last_ms(stderr, "display latency at the end ")
        .unwrap_or_else(|| panic!("no `display latency at the end` line\n{}", report()));
    assert!((10..=400).contains(&settled) && (10..=400).contains(&end));
    // The client really shows frames that soon: its margins on arrival are about the latency.
    assert!(
        run.margins.len() > 200,
        "no margins in the client's log\n{}",
        report()
    );
    let m = median(&run.margins[30..]);
    assert!(
        (0..=(end as i32 + 20)).contains(&m),
        "median margin {m} ms with a latency of {end} ms\n{}",
        report()
    );
}

/// A client whose main loop stalls for 100 ms every second gets its frames late: the server
/// raises the latency above the stalls, and then frames stop arriving late.
#[test]
fn automatic_latency_rises_for_a_late_client() {
    let dir = TempDir::new("latency-stall");
    let server = Server::start(&dir, GUEST, None);
    let run = run_client(
        &dir,
        &server,
        14,
        &[
            "--stall-ms",
            "100",
            "--stall-every",
            "1",
            "--stall-after",
            "2",
        ],
    );
    let exit = server.stop();
    let report = || format!("{}\n{}", exit.report(), run.logs);
    exit.assert_cookies_balanced(300);
    assert!(run.stalls >= 10, "{} stalls\n{}", run.stalls, report());

    let raised = raises(&exit.stderr);
    assert!(
        !raised.is_empty(),
        "the latency was never raised\n{}",
        report()
    );
    let end = last_ms(&exit.stderr, "display latency at the end ")
        .unwrap_or_else(|| panic!("no `display latency at the end` line\n{}", report()));
    assert!(
        end >= 50,
        "the latency ended at {end} ms, below the 100 ms stalls\n{}",
        report()
    );
    // At 10 ms each stall makes about three frames late (30 or more in all, see the fixed
    // test below); once raised, none.
    assert!(
        run.late <= 15,
        "{} frames came late over {} stalls\n{}",
        run.late,
        run.stalls,
        report()
    );
}

/// `--mm-latency 150` stays at 150 ms: the client's margins are about 150 ms, and frames that
/// come late (the client stalls for 250 ms) change nothing.
#[test]
fn fixed_latency_stays_fixed() {
    let dir = TempDir::new("latency-fixed");
    let mut args = GUEST.to_vec();
    args.extend(["--mm-latency", "150"]);
    let server = Server::start(&dir, &args, None);
    let run = run_client(
        &dir,
        &server,
        10,
        &[
            "--stall-ms",
            "250",
            "--stall-every",
            "1.5",
            "--stall-after",
            "2",
        ],
    );
    let exit = server.stop();
    let report = || format!("{}\n{}", exit.report(), run.logs);
    exit.assert_cookies_balanced(200);

    assert!(
        exit.stderr.contains("display latency fixed at 150 ms"),
        "{}",
        report()
    );
    assert!(run.late > 0, "no frame came late\n{}", report());
    assert_eq!(raises(&exit.stderr), Vec::<u32>::new(), "{}", report());
    assert!(
        !exit.stderr.contains("display latency settled")
            && !exit.stderr.contains("display latency at the end"),
        "{}",
        report()
    );
    assert!(
        run.margins.len() > 100,
        "no margins in the client's log\n{}",
        report()
    );
    let m = median(&run.margins);
    assert!(
        (120..=170).contains(&m),
        "median margin {m} ms with a fixed 150 ms\n{}",
        report()
    );
    assert!(run.counters.len() > 100, "{}", report());
}
