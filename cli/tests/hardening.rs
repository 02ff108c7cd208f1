//! Hostile peers against `spice-shim serve` (see SECURITY.md): connections that dribble their
//! link stage cannot lock real clients out, password guessing is throttled per address, and the
//! server refuses to listen beyond loopback without protection unless told to.

mod support;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Server, spicy_screenshot, spicy_screenshot_within};
use util::{TempDir, poll};

const W: u32 = 320;
const H: u32 = 240;

fn small_guest() -> Vec<&'static str> {
    vec![
        "--size",
        "320x240",
        "--fps",
        "15",
        "--video-codecs",
        "mjpeg",
    ]
}

/// Peers that each send one byte of a link header every `every`, reconnecting when the server
/// drops them. Counts the drops.
struct Dribblers {
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    connected: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dribblers {
    fn start(port: u16, n: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let (s, d, c) = (stop.clone(), dropped.clone(), connected.clone());
        let thread = std::thread::spawn(move || {
            // "REDQ": the magic of a link header, then nothing more than a byte at a time.
            const HEADER: &[u8] = b"REDQ\x02\x00\x00\x00";
            let connect = || {
                let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_nonblocking(true).ok()?;
                Some((s, 0usize))
            };
            let mut peers: Vec<Option<(TcpStream, usize)>> = (0..n).map(|_| connect()).collect();
            c.store(peers.iter().flatten().count(), Ordering::Relaxed);
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next += every;
                for p in peers.iter_mut() {
                    let alive = match p {
                        Some((sock, sent)) => {
                            let mut buf = [0u8; 64];
                            let closed = matches!(sock.read(&mut buf), Ok(0))
                                || matches!(&sock.read(&mut buf), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
                            let byte = [HEADER[*sent % HEADER.len()]];
                            if closed || sock.write(&byte).is_err() {
                                false
                            } else {
                                *sent += 1;
                                true
                            }
                        }
                        None => false,
                    };
                    if !alive {
                        if p.is_some() {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                        *p = connect();
                    }
                }
                c.store(peers.iter().flatten().count(), Ordering::Relaxed);
            }
        });
        Self {
            stop,
            dropped,
            connected,
            thread: Some(thread),
        }
    }
}

impl Drop for Dribblers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 200 connections that send a byte of their link header every 2 s hold no slot a real client
/// needs: spicy-screenshot gets its picture within 5 s while they go on. The link stage has one
/// deadline for all of it (10 s), so the server drops them even though each read is answered
/// in time.
#[test]
fn dribbling_handshakes_do_not_lock_clients_out() {
    let dir = TempDir::new("dribble");
    let server = Server::start(&dir, &small_guest(), None);
    let dribblers = Dribblers::start(server.port(), 200, Duration::from_secs(2));
    let all_in = poll(Duration::from_secs(20), || {
        (dribblers.connected.load(Ordering::Relaxed) >= 200).then_some(())
    });
    assert!(
        all_in.is_some(),
        "the 200 dribbling peers could not connect"
    );
    std::thread::sleep(Duration::from_secs(1));

    spicy_screenshot_within(&dir, "during", &server, None, Duration::from_secs(5))
        .expect_bars(W, H);

    // They sent a byte every 2 s, yet the server dropped them at the link-stage deadline.
    let dropped = poll(Duration::from_secs(30), || {
        (dribblers.dropped.load(Ordering::Relaxed) >= 100).then_some(())
    });
    assert!(
        dropped.is_some(),
        "only {} dribbling peers were dropped in 30 s\n{}",
        dribblers.dropped.load(Ordering::Relaxed),
        server.logs()
    );
    spicy_screenshot_within(&dir, "later", &server, None, Duration::from_secs(5)).expect_bars(W, H);
    drop(dribblers);
    server.stop().assert_cookies_balanced(1);
}

/// Ten wrong passwords from one address within a minute lock it out: even the right password
/// is refused (with the same answer as a wrong one) until 30 s pass without a wrong one. One
/// log line marks the start, one the end.
#[test]
fn password_guessing_is_throttled() {
    let dir = TempDir::new("guessing");
    let server = Server::start(&dir, &small_guest(), Some("right"));
    for i in 0..10 {
        spicy_screenshot(&dir, &format!("wrong-{i}"), &server, Some("wrong")).expect_refused();
    }
    assert!(
        server.wait_for_stderr("10 wrong passwords within 60 s", Duration::from_secs(5)),
        "{}",
        server.logs()
    );
    let locked = spicy_screenshot(&dir, "right-locked", &server, Some("right"));
    locked.expect_refused();
    assert!(
        server
            .stderr()
            .contains("too many wrong passwords from this address (ticket not checked)"),
        "{}",
        server.logs()
    );
    assert!(
        server.wait_for_stderr("accepted again", Duration::from_secs(60)),
        "the lockout did not end\n{}",
        server.logs()
    );
    spicy_screenshot(&dir, "right-later", &server, Some("right")).expect_bars(W, H);
    let log = server.stderr();
    assert_eq!(
        log.matches("wrong passwords within 60 s").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("accepted again").count(), 1, "{log}");
    server.stop().assert_cookies_balanced(1);
}

/// Listening beyond loopback with neither a password nor TLS is refused, naming the option
/// that allows it; with that option (or a password) the server starts.
#[test]
fn exposed_without_protection_is_refused() {
    let dir = TempDir::new("exposed");
    let port = util::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_spice-shim"))
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--duration",
            "1",
        ])
        .env_remove("SPICE_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--disable-ticketing"), "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");

    for (extra, password) in [
        (vec!["--disable-ticketing"], None),
        (vec![], Some("secret")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spice-shim"));
        cmd.args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--duration",
            "2",
        ])
        .args(small_guest())
        .args(&extra);
        match password {
            Some(p) => cmd.env("SPICE_PASSWORD", p),
            None => cmd.env_remove("SPICE_PASSWORD"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(&format!("listening on spice://0.0.0.0:{port}")),
            "{stderr}"
        );
    }
    drop(dir);
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// Makes a CA and a server certificate for 127.0.0.1 with the openssl CLI, in QEMU's x509-dir
/// layout; returns the directory.
fn make_x509_dir(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let x = dir.join(name);
    std::fs::create_dir_all(&x).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(&x)
            .args(args)
            .output()
            .expect("openssl runs (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=spice-shim test CA {name}"),
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca-cert.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
        "-out",
        "server-cert.pem",
    ]);
    x
}

/// spicy-screenshot with `args`, trusting `ca`. spicy-screenshot has no CA option: spice-gtk
/// then verifies the server with OpenSSL's default trust store, which `SSL_CERT_FILE` sets.
fn spicy_screenshot_tls(
    dir: &TempDir,
    name: &str,
    args: &[String],
    ca: &std::path::Path,
) -> (Option<std::process::ExitStatus>, std::path::PathBuf, String) {
    let out = dir.join(&format!("{name}.ppm"));
    let mut cmd = Command::new("spicy-screenshot");
    cmd.env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .args(args)
        .arg("-o")
        .arg(&out);
    let mut proc = util::ChildGuard::spawn(name, cmd, dir);
    let status = proc.wait_timeout(support::CLIENT_TIMEOUT);
    proc.kill();
    (status, out, proc.logs())
}

/// TLS as QEMU's tls-port: a real spice-gtk client gets a correct picture over TLS; with every
/// channel secure, one that links on the plain port is told SPICE_LINK_ERR_NEED_SECURED and
/// retries on the TLS port; a client that trusts another CA is refused; a plain SPICE link on
/// the TLS port fails cleanly and the server goes on.
#[test]
fn tls_port_serves_real_clients() {
    let dir = TempDir::new("tls");
    let x509 = make_x509_dir(&dir, "server");
    let other_ca = make_x509_dir(&dir, "other").join("ca-cert.pem");
    let tls_port = util::free_port();
    let x509_arg = x509.display().to_string();
    let mut args = small_guest();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    args.extend(["--tls-listen", &tls_listen, "--x509-dir", &x509_arg]);
    let server = Server::start(&dir, &args, Some("pw"));
    assert!(
        server.wait_for_stderr(
            "channels that must use TLS: main, display, inputs, cursor",
            Duration::from_secs(5)
        ),
        "{}",
        server.logs()
    );
    let ca = x509.join("ca-cert.pem");

    // The TLS port only.
    let tls_only: Vec<String> = ["-h", "127.0.0.1", "-s", &tls_port.to_string(), "-w", "pw"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (status, out, logs) = spicy_screenshot_tls(&dir, "tls-only", &tls_only, &ca);
    assert!(
        status.is_some_and(|s| s.success()),
        "{logs}\n{}",
        server.logs()
    );
    let img = test_guest::read_ppm(&out).unwrap();
    assert_eq!((img.width, img.height), (W, H));
    test_guest::check_bars(&img, support::TOLERANCE).unwrap();
    assert!(
        server.stderr().contains("(TLS): display channel linked"),
        "{}",
        server.logs()
    );

    // Both ports given: the main channel tries the plain port first, is told to secure itself
    // and comes back over TLS.
    let both: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &server.port().to_string(),
        "-s",
        &tls_port.to_string(),
        "-w",
        "pw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, out, logs) = spicy_screenshot_tls(&dir, "redirected", &both, &ca);
    assert!(
        status.is_some_and(|s| s.success()),
        "{logs}\n{}",
        server.logs()
    );
    test_guest::check_bars(&test_guest::read_ppm(&out).unwrap(), support::TOLERANCE).unwrap();
    assert!(
        server
            .stderr()
            .contains("main channel 0 refused (link error 5)"),
        "no NEED_SECURED on the plain port\n{}",
        server.logs()
    );

    // A client that trusts another CA does not get a picture.
    let (status, out, logs) = spicy_screenshot_tls(&dir, "wrong-ca", &tls_only, &other_ca);
    assert!(!status.is_some_and(|s| s.success()), "{logs}");
    assert!(!out.exists(), "{logs}");

    // A plain SPICE link on the TLS port: the TLS layer refuses it and closes.
    let mut sock = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    sock.write_all(b"REDQ\x02\x00\x00\x00\x02\x00\x00\x00\x1a\x00\x00\x00")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the TLS port neither answered nor closed: {e}"),
        }
    }
    assert!(
        !got.starts_with(b"REDQ"),
        "a plain link got a SPICE answer on the TLS port"
    );
    assert!(
        server.wait_for_stderr("(TLS): link failed", Duration::from_secs(5)),
        "{}",
        server.logs()
    );

    // The server goes on.
    let (status, _, logs) = spicy_screenshot_tls(&dir, "after", &tls_only, &ca);
    assert!(
        status.is_some_and(|s| s.success()),
        "{logs}\n{}",
        server.logs()
    );
    server.stop().assert_cookies_balanced(1);
}
