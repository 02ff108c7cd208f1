//! A pipeline that fails at run time: every cookie still comes back, the pipeline is restarted,
//! and after three failures the client falls back to its next codec and gets a picture.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

use util::{KillOnDrop, TempDir, free_port, wait_for_port, workspace_root};

#[test]
fn a_failing_pipeline_returns_cookies_and_falls_back() {
    let dir = TempDir::new("encoder-failure");
    // h264 negotiates a width the guest never has: "not-negotiated" on the first frame.
    let h264 = std::fs::read_to_string(workspace_root().join("pipelines/h264.d/90-x264.pipeline"))
        .unwrap()
        .replace(
            "video/x-raw,format=I420",
            "video/x-raw,format=I420,width=64",
        );
    assert!(h264.contains("width=64"));
    std::fs::write(dir.join("h264.pipeline"), h264).unwrap();
    std::fs::copy(
        workspace_root().join("pipelines/vp8.pipeline"),
        dir.join("vp8.pipeline"),
    )
    .unwrap();

    let port = free_port();
    let server = Command::new(env!("CARGO_BIN_EXE_spice-shim"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--size",
            "640x480",
            "--video-codecs",
            "h264,vp8",
            "--duration",
            "25",
        ])
        .arg("--pipelines")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(server);
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "server did not listen on {port}"
    );

    let shot = dir.join("shot.ppm");
    let status = Command::new("timeout")
        .args([
            "40",
            "spicy-screenshot",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-o",
        ])
        .arg(&shot)
        .status()
        .unwrap();
    assert!(status.success(), "spicy-screenshot failed: {status}");
    let image = test_guest::read_ppm(&shot).unwrap();
    assert_eq!((image.width, image.height), (640, 480));
    test_guest::check_bars(&image, 48).unwrap();

    // Stop the server and read its report.
    let _ = Command::new("kill").arg(server.0.id().to_string()).status();
    let child = std::mem::replace(&mut server.0, Command::new("true").spawn().unwrap());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "server failed: {stdout}\n{stderr}");
    assert!(
        stderr.contains("h264 pipeline error") && stderr.contains("not-negotiated"),
        "{stderr}"
    );
    assert!(stderr.contains("restarting the h264 pipeline"), "{stderr}");
    assert!(
        stderr.contains("the h264 pipeline failed 3 times"),
        "{stderr}"
    );
    assert!(stderr.contains("using vp8"), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("frames drawn:"))
        .unwrap_or_else(|| panic!("no counters in {stdout}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(nums[0] > 0, "{line}");
    assert_eq!(nums[0], nums[1], "every cookie back: {line}");
    assert!(stdout.contains("frames encoded (vp8)"), "{stdout}");
}
