//! Rate control behind a real bottleneck: the server and a spice-gtk client in a network
//! namespace whose loopback is shaped to 1 Mbit/s (see `netns/mod.rs`). The H.264 encoder
//! has film grain added before it (see `netns::write_grain_pipeline`), so its stream fills the
//! bitrate rate control sets, and that bitrate is what crosses the link. Within
//! a generous time the rate-control target must fall below the link rate (15 s; about 2 s is
//! usual, the server's display socket holding little unsent data), the client must keep
//! receiving new frames while the link stays shaped (at least a frame per second on average
//! over 5 s, about 30 is usual), the target must climb back above twice the link once the
//! shaping is lifted (40 s; about 15 is usual), and every cookie must come back.
//!
//! This checks that the control settles, not how fast. It fails (never skips) without root,
//! `ip netns` or `tc`'s `tbf` qdisc.

mod netns;
mod util;

use std::time::{Duration, Instant};

use netns::{Netns, cookies, frames, samples, start_client, start_serve, stop};
use util::{TempDir, workspace_root};

/// The shaped link, kbit/s.
const LINK_KBIT: u32 = 1000;
const FPS: u32 = 30;

/// The newest counter the client showed.
fn last_counter(client: &util::ChildGuard) -> Option<u32> {
    frames(client).last().map(|&(_, c)| c)
}

/// Waits up to `timeout` for `cond`, checking the server and the client are still running.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    serve: &mut util::ChildGuard,
    client: &mut util::ChildGuard,
    mut cond: impl FnMut(&util::ChildGuard, &util::ChildGuard) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond(serve, client) {
            return v;
        }
        serve.assert_running(&format!("while waiting for {what}"));
        client.assert_running(&format!("while waiting for {what}"));
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}\n{}\n{}",
            serve.logs(),
            client.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bitrate_settles_below_a_shaped_link_and_frames_keep_flowing() {
    let ns = Netns::new("ss-shaped").unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("shaped-link");
    let pipelines = netns::write_grain_pipeline(dir.path(), &workspace_root(), Some(FPS));
    let pipelines = pipelines.to_str().expect("utf-8 path");
    let fps = FPS.to_string();
    let mut serve = start_serve(
        &ns,
        &dir,
        0.5,
        &[
            "--pattern",
            "counter",
            "--size",
            "1280x720",
            "--fps",
            &fps,
            "--video-codecs",
            "h264",
            "--cursor",
            "none",
            "--pipelines",
            pipelines,
            "--duration",
            "120",
        ],
    );
    let mut client = start_client(&ns, &dir, Duration::from_secs(110));

    // Unshaped first, so the client links at full speed.
    wait_for(
        "first frame",
        Duration::from_secs(30),
        &mut serve,
        &mut client,
        |_, c| last_counter(c),
    );
    std::thread::sleep(Duration::from_secs(2));
    let configured = samples(&serve)
        .last()
        .and_then(|s| s.kbps)
        .expect("a stats line with the h264 bitrate");
    assert!(
        configured > 2 * LINK_KBIT,
        "the encoder starts at {configured} kbit/s: not above the link"
    );

    ns.shape(Some(LINK_KBIT)).expect("shaping the link");
    let shaped = Instant::now();
    let target = wait_for(
        "bitrate target below the link rate",
        Duration::from_secs(15),
        &mut serve,
        &mut client,
        |s, _| {
            samples(s)
                .last()
                .and_then(|x| x.kbps)
                .filter(|&k| k < LINK_KBIT)
        },
    );
    eprintln!(
        "target {target} kbit/s after {:.1} s at {LINK_KBIT} kbit/s",
        shaped.elapsed().as_secs_f64()
    );

    // Still shaped: the picture keeps changing on the client.
    let mut seen = wait_for(
        "a frame on the shaped link",
        Duration::from_secs(10),
        &mut serve,
        &mut client,
        |_, c| last_counter(c),
    );
    for round in 0..3 {
        let before = seen;
        seen = wait_for(
            &format!("a newer frame on the shaped link (round {round}, counter {before})"),
            Duration::from_secs(10),
            &mut serve,
            &mut client,
            |_, c| last_counter(c).filter(|&n| n > before),
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Frames flow, not a trickle: new pictures over 5 s.
    let before = frames(&client).len();
    std::thread::sleep(Duration::from_secs(5));
    let shown = frames(&client).len() - before;
    assert!(
        shown >= 5,
        "{shown} new pictures in 5 s on the shaped link\n{}",
        client.logs()
    );
    let last = samples(&serve).last().cloned().expect("stats lines");
    assert!(
        last.kbps.is_some_and(|k| k < LINK_KBIT),
        "the target went back above the link while it stayed shaped: {last:?}"
    );
    ns.shape(None).expect("lifting the shaping");
    let lifted = Instant::now();
    let back = wait_for(
        "bitrate target back above twice the link once lifted",
        Duration::from_secs(40),
        &mut serve,
        &mut client,
        |s, _| {
            samples(s)
                .last()
                .and_then(|x| x.kbps)
                .filter(|&k| k > 2 * LINK_KBIT)
        },
    );
    eprintln!(
        "target {back} kbit/s {:.1} s after the shaping was lifted",
        lifted.elapsed().as_secs_f64()
    );

    let client_status = stop(&mut client, Duration::from_secs(10));
    let serve_status = stop(&mut serve, Duration::from_secs(20));
    assert!(
        client_status.is_some_and(|s| s.success()),
        "client: {client_status:?}\n{}",
        client.logs()
    );
    let (drawn, returned) = cookies(&serve)
        .unwrap_or_else(|| panic!("no exit report from the server\n{}", serve.logs()));
    assert!(drawn > 0, "no frame drawn");
    assert_eq!(drawn, returned, "cookies drawn vs returned");
    assert!(
        serve_status.is_some_and(|s| s.success()),
        "server: {serve_status:?}\n{}",
        serve.logs()
    );
}
