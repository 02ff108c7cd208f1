//! A codec's ordered pipeline files (`<codec>.d/*.pipeline`): at start-up the first file whose
//! elements exist and that starts is used, and the start-up line says why each earlier one was
//! skipped; at run time a file whose pipeline keeps failing gives way to the next one. Each
//! test builds its own pipelines directory and checks that a real client (spicy-screenshot)
//! gets the colour bars through the file chosen.

mod support;
mod util;

use std::path::Path;

use support::{Server, spicy_screenshot};
use util::{TempDir, workspace_root};

const SIZE: &[&str] = &["--pattern", "bars", "--size", "640x480"];

/// The shipped software H.264 pipeline.
fn x264_text() -> String {
    std::fs::read_to_string(workspace_root().join("pipelines/h264.d/90-x264.pipeline")).unwrap()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A pipeline naming an element that exists nowhere.
const MISSING: &str = "# A hardware encoder this machine does not have.\n\
    spicedmabufsrc name=src ! videoconvert ! video/x-raw,format=NV12\n\
    ! spiceshimtestnosuchenc name=enc bitrate=8000 ! h264parse config-interval=-1\n\
    ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink\n";

/// Every element exists, but filesink cannot open its file on the way to PLAYING.
const FAILS_TO_START: &str = "# Starts a branch that cannot open its file.\n\
    spicedmabufsrc name=src ! videoconvert ! video/x-raw,format=I420 ! tee name=t\n\
    ! queue ! x264enc name=enc tune=zerolatency speed-preset=ultrafast bframes=0\n\
    ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink\n\
    t. ! queue ! filesink location=/nonexistent/spice-shim-test/x.raw\n";

#[test]
fn the_first_file_that_exists_and_starts_is_chosen_and_serves_a_client() {
    let dir = TempDir::new("pipeline-choice");
    let pipelines = dir.join("pipelines");
    let x264 = x264_text();
    write(&pipelines, "h264.d/10-missing.pipeline", MISSING);
    write(&pipelines, "h264.d/50-broken.pipeline", FAILS_TO_START);
    // Switched off by its name: it would win otherwise (it sorts before 90-x264).
    write(
        &pipelines,
        "h264.d/60-off.pipeline.off",
        &x264.replace("bitrate=8000", "bitrate=1234"),
    );
    write(&pipelines, "h264.d/90-x264.pipeline", &x264);
    // Ignored: h264.d exists.
    write(
        &pipelines,
        "h264.pipeline",
        &x264.replace("bitrate=8000", "bitrate=4321"),
    );
    // h265 has no usable file: not offered, and the client gets h264.
    write(&pipelines, "h265.d/10-missing.pipeline", MISSING);
    write(
        &pipelines,
        "h265.d/90-x265.pipeline.off",
        "not even a pipeline",
    );

    let pipelines_arg = pipelines.display().to_string();
    let mut args = vec!["--video-codecs", "h265,h264", "--pipelines", &pipelines_arg];
    args.extend_from_slice(SIZE);
    let server = Server::start(&dir, &args, None);
    let stderr = server.stderr();
    let line = "spice-shim: codec h264: using h264.d/90-x264.pipeline (skipped 10-missing: \
                missing element spiceshimtestnosuchenc; 50-broken: does not start: filesink0: \
                Could not open file \"/nonexistent/spice-shim-test/x.raw\" for writing.)\n";
    assert!(stderr.contains(line), "no line {line:?} in\n{stderr}");
    assert!(
        stderr.contains("spice-shim: codec h264: pipeline spicedmabufsrc name=src ! videoconvert"),
        "{stderr}"
    );
    assert!(stderr.contains("bitrate=8000"), "{stderr}");
    assert!(
        !stderr.contains("bitrate=1234"),
        "a disabled file was used\n{stderr}"
    );
    assert!(
        !stderr.contains("bitrate=4321"),
        "the shadowed file was used\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "spice-shim: warning: {} is ignored: h264.d/ is used instead",
            pipelines.join("h264.pipeline").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "spice-shim: warning: codec h265 not offered: h265.d/10-missing.pipeline: missing \
             element spiceshimtestnosuchenc\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("spice-shim: codecs offered: h264\n"),
        "{stderr}"
    );

    spicy_screenshot(&dir, "client", &server, None).expect_bars(640, 480);
    let exit = server.stop();
    exit.assert_cookies_balanced(1);
    let [client] = exit.stats.clients.as_slice() else {
        panic!("expected one client\n{}", exit.report());
    };
    assert_eq!(client.codec, "h264", "{}", exit.report());
    assert!(client.sent > 0, "{}", exit.report());
}

#[test]
fn a_file_whose_pipeline_keeps_failing_gives_way_to_the_next_file() {
    let dir = TempDir::new("pipeline-fallback");
    let pipelines = dir.join("pipelines");
    let x264 = x264_text();
    // Starts, but negotiates a width the guest never has: "not-negotiated" on every first frame.
    let failing = x264.replace(
        "video/x-raw,format=I420",
        "video/x-raw,format=I420,width=64",
    );
    assert!(failing.contains("width=64"));
    write(&pipelines, "h264.d/10-fails.pipeline", &failing);
    write(&pipelines, "h264.d/20-x264.pipeline", &x264);

    let pipelines_arg = pipelines.display().to_string();
    let mut args = vec!["--video-codecs", "h264", "--pipelines", &pipelines_arg];
    args.extend_from_slice(SIZE);
    let server = Server::start(&dir, &args, None);
    let stderr = server.stderr();
    assert!(
        stderr.contains(
            "spice-shim: codec h264: using h264.d/10-fails.pipeline (if it keeps failing: \
             20-x264)\n"
        ),
        "{stderr}"
    );

    // Only h264 is offered: the picture comes through the second file.
    spicy_screenshot(&dir, "client", &server, None).expect_bars(640, 480);
    let exit = server.stop();
    let stderr = &exit.stderr;
    for n in 1..=2 {
        let restart =
            format!("restarting the h264 pipeline (failure {n}, h264.d/10-fails.pipeline)");
        assert!(
            stderr.contains(&restart),
            "no {restart:?}\n{}",
            exit.report()
        );
    }
    assert!(
        stderr.contains(
            "the h264 pipeline failed 3 times (h264.d/10-fails.pipeline); switching to \
             h264.d/20-x264.pipeline"
        ),
        "{}",
        exit.report()
    );
    assert!(
        !stderr.contains("fall back to another codec"),
        "{}",
        exit.report()
    );
    exit.assert_cookies_balanced(1);
    let [client] = exit.stats.clients.as_slice() else {
        panic!("expected one client\n{}", exit.report());
    };
    assert_eq!(client.codec, "h264", "{}", exit.report());
    assert!(client.sent > 0, "{}", exit.report());
}
