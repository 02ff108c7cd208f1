// SPDX-License-Identifier: MPL-2.0
//! Unit tests of the wire codec and socket helpers.

use super::*;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

fn xr24() -> u32 {
    u32::from_le_bytes(*b"XR24")
}

fn scanout(planes: usize) -> Message {
    Message::Scanout {
        width: 1920,
        height: 1080,
        fourcc: xr24(),
        y0_top: true,
        modifier: MOD_INVALID,
        planes: (0..planes)
            .map(|i| PlaneLayout {
                offset: i as u32 * 0x10_0000,
                stride: 7680 - i as u32,
            })
            .collect(),
    }
}

fn samples() -> Vec<Message> {
    let mut v: Vec<Message> = (1..=MAX_PLANES).map(scanout).collect();
    v.push(Message::scanout_disabled());
    v.push(Message::Scanout {
        width: 64,
        height: 48,
        fourcc: u32::from_le_bytes(*b"NV12"),
        y0_top: false,
        modifier: MOD_LINEAR,
        planes: vec![PlaneLayout::default(); 2],
    });
    v.push(Message::Draw {
        x: 0,
        y: 0,
        w: 1920,
        h: 1080,
        draw_id: 0,
    });
    v.push(Message::Draw {
        x: u32::MAX,
        y: 7,
        w: 1,
        h: 2,
        draw_id: u64::MAX,
    });
    for (i, status) in [
        DoneStatus::Released,
        DoneStatus::Dropped,
        DoneStatus::Refused,
    ]
    .into_iter()
    .enumerate()
    {
        v.push(Message::Done {
            draw_id: 1 << (20 + i),
            status,
        });
    }
    v.push(Message::error(
        error_code::BAD_SCANOUT,
        "unknown fourcc 0x20203859",
    ));
    v.push(Message::error(0, ""));
    v.push(Message::Hello {
        version: 1,
        name: "spice-shim feed 0.1 – ünïcødé".into(),
    });
    v.push(Message::Hello {
        version: 99,
        name: String::new(),
    });
    v.push(Message::error(7, "x".repeat(MAX_TEXT)));
    v
}

fn set_u32(packet: &mut [u8], at: usize, v: u32) {
    packet[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn err(packet: &[u8], nfds: usize) -> WireError {
    match decode(packet, nfds) {
        Ok(m) => panic!("decoded {m:?} from a bad packet"),
        Err(e) => e,
    }
}

#[test]
fn round_trip_every_message() {
    for msg in samples() {
        let bytes = encode(&msg);
        assert!(bytes.len() <= MAX_PACKET, "{msg:?}");
        assert_eq!(&bytes[..4], b"SDMB");
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), msg.type_id());
        let back = decode(&bytes, msg.fd_count()).unwrap_or_else(|e| panic!("{msg:?}: {e}"));
        assert_eq!(back, msg);
        assert_eq!(encode(&back), bytes);
    }
}

#[test]
fn golden_bytes() {
    let draw = Message::Draw {
        x: 1,
        y: 2,
        w: 3,
        h: 4,
        draw_id: 0x0102_0304_0506_0708,
    };
    let expected: Vec<u8> = [
        &b"SDMB"[..],
        &[1, 0, 2, 0],
        &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0],
        &[8, 7, 6, 5, 4, 3, 2, 1],
    ]
    .concat();
    assert_eq!(encode(&draw), expected);

    let done = Message::Done {
        draw_id: 5,
        status: DoneStatus::Dropped,
    };
    let expected: Vec<u8> = [
        &b"SDMB"[..],
        &[1, 0, 3, 0],
        &[5, 0, 0, 0, 0, 0, 0, 0],
        &[1, 0, 0, 0],
    ]
    .concat();
    assert_eq!(encode(&done), expected);

    let scanout = Message::Scanout {
        width: 640,
        height: 480,
        fourcc: xr24(),
        y0_top: true,
        modifier: MOD_LINEAR,
        planes: vec![PlaneLayout {
            offset: 0,
            stride: 2560,
        }],
    };
    let bytes = encode(&scanout);
    assert_eq!(bytes.len(), HEADER_LEN + SCANOUT_FIXED + PLANE_LEN);
    assert_eq!(&bytes[8..12], &640u32.to_le_bytes());
    assert_eq!(&bytes[12..16], &480u32.to_le_bytes());
    assert_eq!(&bytes[16..20], b"XR24");
    assert_eq!(&bytes[20..24], &[1, 0, 0, 0]);
    assert_eq!(&bytes[24..32], &[0; 8]);
    assert_eq!(&bytes[32..36], &[1, 0, 0, 0]);
    assert_eq!(&bytes[36..40], &[0; 4]);
    assert_eq!(&bytes[40..44], &2560u32.to_le_bytes());

    let hello = encode(&Message::hello("ab"));
    assert_eq!(
        hello,
        [&b"SDMB"[..], &[1, 0, 5, 0, 1, 0, 0, 0, 2, 0, 0, 0], b"ab"].concat()
    );
}

#[test]
fn header_errors() {
    let good = encode(&Message::Done {
        draw_id: 1,
        status: DoneStatus::Released,
    });

    let e = err(&good[..5], 0);
    assert!(matches!(e, WireError::ShortHeader { len: 5 }));
    assert_eq!(
        e.to_string(),
        "packet is 5 bytes, shorter than the 8-byte header"
    );
    assert!(matches!(err(&[], 0), WireError::ShortHeader { len: 0 }));

    let mut p = good.clone();
    p[3] = b'C';
    let e = err(&p, 0);
    assert!(matches!(e, WireError::BadMagic { found } if &found == b"SDMC"));
    assert_eq!(
        e.to_string(),
        "bad magic 0x53444d43, expected 0x53444d42 (\"SDMB\")"
    );
    assert!(e.is_fatal());

    let mut p = good.clone();
    p[4] = 2;
    let e = err(&p, 0);
    assert!(matches!(e, WireError::BadVersion { found: 2 }));
    assert_eq!(e.to_string(), "unsupported protocol version 2, expected 1");
    assert!(e.is_fatal());

    for t in [0u16, 6, 9, 0xffff] {
        let mut p = good.clone();
        p[6..8].copy_from_slice(&t.to_le_bytes());
        let e = err(&p, 0);
        assert!(matches!(e, WireError::UnknownType { type_id } if type_id == t));
        assert!(!e.is_fatal());
    }
    let mut p = good.clone();
    p[6] = 9;
    assert_eq!(err(&p, 0).to_string(), "unknown message type 9");

    let mut p = encode(&Message::error(1, "x".repeat(MAX_TEXT)));
    assert_eq!(p.len(), MAX_PACKET);
    p.push(b'x');
    let e = err(&p, 0);
    assert!(matches!(e, WireError::PacketTooLong { len } if len == MAX_PACKET + 1));
    assert_eq!(
        e.to_string(),
        "packet is 4097 bytes, more than the 4096-byte maximum"
    );
}

#[test]
fn body_length_errors() {
    let draw = encode(&Message::Draw {
        x: 1,
        y: 2,
        w: 3,
        h: 4,
        draw_id: 5,
    });
    let e = err(&draw[..HEADER_LEN + 12], 0);
    assert!(matches!(
        e,
        WireError::BodyLength {
            kind: "DRAW",
            len: 12,
            expected: 24
        }
    ));
    assert_eq!(e.to_string(), "DRAW: body is 12 bytes, expected 24");

    let mut long = draw.clone();
    long.push(0);
    assert_eq!(
        err(&long, 0).to_string(),
        "DRAW: body is 25 bytes, expected 24"
    );

    let done = encode(&Message::Done {
        draw_id: 5,
        status: DoneStatus::Refused,
    });
    assert_eq!(
        err(&done[..10], 0).to_string(),
        "DONE: body is 2 bytes, expected 12"
    );
    let mut long = done.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(
        err(&long, 0).to_string(),
        "DONE: body is 16 bytes, expected 12"
    );

    let sc = encode(&scanout(2));
    assert_eq!(
        err(&sc[..HEADER_LEN + 10], 2).to_string(),
        "SCANOUT: body is 10 bytes, expected at least 28"
    );
    assert_eq!(
        err(&sc[..sc.len() - 1], 2).to_string(),
        "SCANOUT: body is 43 bytes, expected 44"
    );
    let mut long = sc.clone();
    long.extend_from_slice(&[0; 8]);
    assert_eq!(
        err(&long, 2).to_string(),
        "SCANOUT: body is 52 bytes, expected 44"
    );

    // Every strict prefix and every extension of every valid packet is rejected.
    for msg in samples() {
        let p = encode(&msg);
        for cut in 0..p.len() {
            assert!(
                decode(&p[..cut], msg.fd_count()).is_err(),
                "{msg:?} cut at {cut}"
            );
        }
        if p.len() < MAX_PACKET {
            let mut longer = p.clone();
            longer.push(0);
            assert!(decode(&longer, msg.fd_count()).is_err(), "{msg:?} + 1 byte");
        }
    }
}

#[test]
fn scanout_errors() {
    let mut p = encode(&scanout(4));
    set_u32(&mut p, HEADER_LEN + 24, 5);
    p.extend_from_slice(&[0; 8]);
    let e = err(&p, 5);
    assert!(matches!(e, WireError::TooManyPlanes { planes: 5 }));
    assert_eq!(
        e.to_string(),
        "SCANOUT: 5 planes declared, at most 4 allowed"
    );
    set_u32(&mut p, HEADER_LEN + 24, u32::MAX);
    assert!(matches!(
        err(&p, 4),
        WireError::TooManyPlanes { planes: u32::MAX }
    ));

    let p = encode(&scanout(2));
    let e = err(&p, 1);
    assert!(matches!(e, WireError::FdCount { planes: 2, nfds: 1 }));
    assert_eq!(
        e.to_string(),
        "SCANOUT: 2 planes declared but 1 fd attached"
    );
    assert_eq!(
        err(&p, 0).to_string(),
        "SCANOUT: 2 planes declared but 0 fds attached"
    );
    assert_eq!(
        err(&p, 3).to_string(),
        "SCANOUT: 2 planes declared but 3 fds attached"
    );
    let p1 = encode(&scanout(1));
    assert_eq!(
        err(&p1, 2).to_string(),
        "SCANOUT: 1 plane declared but 2 fds attached"
    );
    let off = encode(&Message::scanout_disabled());
    assert!(matches!(
        err(&off, 1),
        WireError::FdCount { planes: 0, nfds: 1 }
    ));

    for flags in [2u32, 0x8000_0000, 3] {
        let mut p = encode(&scanout(1));
        set_u32(&mut p, HEADER_LEN + 12, flags);
        let e = err(&p, 1);
        assert!(matches!(e, WireError::BadFlags { flags: f } if f == flags));
    }
    let mut p = encode(&scanout(1));
    set_u32(&mut p, HEADER_LEN + 12, 3);
    assert_eq!(
        err(&p, 1).to_string(),
        "SCANOUT: unknown flag bits 0x00000002 set (flags 0x00000003)"
    );

    // No planes with a size, planes with a zero side.
    let mut p = encode(&Message::scanout_disabled());
    set_u32(&mut p, HEADER_LEN, 640);
    let e = err(&p, 0);
    assert!(matches!(
        e,
        WireError::BadDisabled {
            width: 640,
            height: 0,
            planes: 0
        }
    ));
    assert!(
        e.to_string()
            .starts_with("SCANOUT: 0 planes with size 640x0;")
    );
    for (w, h) in [(0, 0), (0, 480), (640, 0)] {
        let mut p = encode(&scanout(1));
        set_u32(&mut p, HEADER_LEN, w);
        set_u32(&mut p, HEADER_LEN + 4, h);
        assert!(matches!(
            err(&p, 1),
            WireError::BadDisabled { planes: 1, .. }
        ));
    }
    // The disabled form keeps whatever fourcc/modifier it carries, and round trips.
    let mut p = encode(&Message::scanout_disabled());
    set_u32(&mut p, HEADER_LEN + 8, xr24());
    let m = decode(&p, 0).unwrap();
    assert!(m.is_scanout_disabled());
    assert_eq!(encode(&m), p);
    assert!(!scanout(1).is_scanout_disabled());
}

#[test]
fn fds_on_other_messages() {
    let draw = encode(&Message::Draw {
        x: 0,
        y: 0,
        w: 1,
        h: 1,
        draw_id: 9,
    });
    let e = err(&draw, 1);
    assert!(matches!(
        e,
        WireError::UnexpectedFds {
            kind: "DRAW",
            nfds: 1
        }
    ));
    assert_eq!(e.to_string(), "DRAW: 1 fd attached, expected none");
    // A short DRAW with an fd is reported by its length first.
    assert!(matches!(
        err(&draw[..12], 1),
        WireError::BodyLength { kind: "DRAW", .. }
    ));
    let done = encode(&Message::Done {
        draw_id: 1,
        status: DoneStatus::Released,
    });
    assert_eq!(
        err(&done, 2).to_string(),
        "DONE: 2 fds attached, expected none"
    );
    assert!(matches!(
        err(&encode(&Message::error(1, "x")), 1),
        WireError::UnexpectedFds { kind: "ERROR", .. }
    ));
    assert!(matches!(
        err(&encode(&Message::hello("x")), 4),
        WireError::UnexpectedFds { kind: "HELLO", .. }
    ));
}

#[test]
fn done_status_errors() {
    let mut p = encode(&Message::Done {
        draw_id: 1,
        status: DoneStatus::Released,
    });
    set_u32(&mut p, HEADER_LEN + 8, 3);
    let e = err(&p, 0);
    assert!(matches!(e, WireError::BadStatus { status: 3 }));
    assert_eq!(e.to_string(), "DONE: unknown status 3");
    for s in [
        DoneStatus::Released,
        DoneStatus::Dropped,
        DoneStatus::Refused,
    ] {
        assert_eq!(DoneStatus::from_u32(s.to_u32()), Some(s));
    }
    assert_eq!(DoneStatus::Released.to_u32(), 0);
    assert_eq!(DoneStatus::Dropped.to_u32(), 1);
    assert_eq!(DoneStatus::Refused.to_u32(), 2);
    assert_eq!(DoneStatus::Dropped.to_string(), "DROPPED");
}

#[test]
fn text_errors() {
    let makers: [fn(&str) -> Message; 2] = [|s| Message::error(3, s), |s| Message::hello(s)];
    for make in makers {
        let good = encode(&make("héllo"));
        let kind = if good[6] == TYPE_ERROR as u8 {
            "ERROR"
        } else {
            "HELLO"
        };

        // Invalid UTF-8: a lone continuation byte, and a truncated sequence.
        let mut p = good.clone();
        p[HEADER_LEN + 8 + 1] = 0x80;
        let e = err(&p, 0);
        assert!(matches!(e, WireError::BadUtf8 { kind: k, offset: 1 } if k == kind));
        assert_eq!(
            e.to_string(),
            format!("{kind}: text is not valid UTF-8 (bad byte at offset 1)")
        );
        let mut p = good.clone();
        p.truncate(p.len() - 4); // "é" is 2 bytes: cut inside it
        let len = u32::try_from(p.len() - HEADER_LEN - 8).unwrap();
        set_u32(&mut p, HEADER_LEN + 4, len);
        assert!(matches!(err(&p, 0), WireError::BadUtf8 { offset: 1, .. }));

        // Declared length differs from the bytes that follow.
        let mut p = good.clone();
        set_u32(&mut p, HEADER_LEN + 4, 5);
        let e = err(&p, 0);
        assert!(matches!(
            e,
            WireError::TextLength {
                declared: 5,
                available: 6,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            format!("{kind}: text length 5 declared but 6 bytes follow")
        );
        let mut p = good.clone();
        set_u32(&mut p, HEADER_LEN + 4, u32::MAX);
        assert!(matches!(err(&p, 0), WireError::TextLength { .. }));
        let mut p = good.clone();
        p.push(b'!');
        assert!(matches!(
            err(&p, 0),
            WireError::TextLength { available: 7, .. }
        ));

        // Missing fixed fields.
        assert_eq!(
            err(&good[..HEADER_LEN + 6], 0).to_string(),
            format!("{kind}: body is 6 bytes, expected at least 8")
        );
    }
}

#[test]
fn text_constructors_fit() {
    let long = "é".repeat(MAX_TEXT); // 2 bytes each: must be cut at a boundary
    let m = Message::error(1, long);
    let Message::Error { text, .. } = &m else {
        unreachable!()
    };
    assert!(text.len() <= MAX_TEXT && text.len() >= MAX_TEXT - 1);
    let bytes = encode(&m);
    assert!(bytes.len() <= MAX_PACKET);
    assert_eq!(decode(&bytes, 0).unwrap(), m);
    let h = Message::hello("n".repeat(MAX_TEXT + 10));
    assert_eq!(encode(&h).len(), MAX_PACKET);
}

#[test]
fn helpers() {
    assert!(rect_in_bounds(0, 0, 640, 480, 640, 480));
    assert!(rect_in_bounds(639, 479, 1, 1, 640, 480));
    assert!(!rect_in_bounds(0, 0, 0, 480, 640, 480));
    assert!(!rect_in_bounds(0, 0, 640, 0, 640, 480));
    assert!(!rect_in_bounds(1, 0, 640, 480, 640, 480));
    assert!(!rect_in_bounds(0, 1, 640, 480, 640, 480));
    assert!(!rect_in_bounds(u32::MAX, 0, 2, 1, u32::MAX, 480));
    assert!(!rect_in_bounds(0, 0, 1, 1, 0, 0));
    assert_eq!(fourcc_name(xr24()), "XR24 (0x34325258)");
    assert_eq!(fourcc_name(0x2020_3859), "Y8   (0x20203859)");
    assert_eq!(fourcc_name(0x0000_0001), "0x00000001");
    assert_eq!(type_name(TYPE_DONE), Some("DONE"));
    assert_eq!(type_name(0), None);
    assert_eq!(scanout(3).fd_count(), 3);
    assert_eq!(Message::hello("x").name(), "HELLO");
    assert_eq!(
        Message::hello("x"),
        Message::Hello {
            version: 1,
            name: "x".into()
        }
    );
    assert!(!WireError::PacketTruncated.is_fatal());
    assert!(WireError::Io(io::Error::from(io::ErrorKind::BrokenPipe)).is_fatal());
    assert!(!WireError::Io(io::Error::from(io::ErrorKind::WouldBlock)).is_fatal());
    assert_eq!(WireError::TooManyFds.error_code(), error_code::MALFORMED);
}

struct XorShift(u64);

impl XorShift {
    fn step(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.step() % n as u64) as usize
    }
}

/// Decoding never panics; whatever decodes re-encodes to the same bytes and satisfies the
/// fd rule.
fn check_no_panic(packet: &[u8], nfds: usize) -> bool {
    match decode(packet, nfds) {
        Ok(msg) => {
            assert_eq!(encode(&msg), packet, "{msg:?}");
            assert_eq!(msg.fd_count(), nfds);
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.to_string().contains('\n'));
            false
        }
    }
}

#[test]
fn fuzz_no_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = samples().iter().map(encode).collect();
    let mut decoded = 0;
    for round in 0..200_000 {
        let nfds = rng.below(MAX_PLANES + 2);
        let packet: Vec<u8> = match round % 4 {
            // Pure noise, mostly short, sometimes with a valid header.
            0 => {
                let len = if rng.below(50) == 0 {
                    rng.below(MAX_PACKET + 100)
                } else {
                    rng.below(80)
                };
                let mut p: Vec<u8> = (0..len).map(|_| rng.step() as u8).collect();
                if p.len() >= HEADER_LEN && rng.below(2) == 0 {
                    p[..4].copy_from_slice(&MAGIC);
                    p[4..6].copy_from_slice(&VERSION.to_le_bytes());
                    p[6..8].copy_from_slice(&(rng.below(7) as u16).to_le_bytes());
                }
                p
            }
            // A valid packet with a few random bytes changed.
            1 => {
                let mut p = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(p.len());
                    p[i] = if rng.below(3) == 0 {
                        rng.step() as u8
                    } else {
                        p[i] ^ (1 << rng.below(8))
                    };
                }
                p
            }
            // A valid packet truncated or extended.
            2 => {
                let mut p = seeds[rng.below(seeds.len())].clone();
                if rng.below(2) == 0 {
                    p.truncate(rng.below(p.len() + 1));
                } else {
                    for _ in 0..1 + rng.below(16) {
                        p.push(rng.step() as u8);
                    }
                }
                p
            }
            // A valid packet with a 32-bit field overwritten by an interesting value.
            _ => {
                let mut p = seeds[rng.below(seeds.len())].clone();
                if p.len() >= HEADER_LEN + 4 {
                    let at = HEADER_LEN + 4 * rng.below((p.len() - HEADER_LEN) / 4);
                    let v = [0, 1, 2, 3, 4, 5, 0xff, u32::MAX, 0x8000_0000][rng.below(9)];
                    set_u32(&mut p, at, v);
                }
                p
            }
        };
        if check_no_panic(&packet, nfds) {
            decoded += 1;
        }
    }
    assert!(decoded > 0, "the mutations never produced a valid packet");
}

fn memfd(name: &str, content: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut f = File::from(fd);
    f.write_all(content).unwrap();
    OwnedFd::from(f)
}

fn read_all_at0(fd: &OwnedFd, len: usize) -> Vec<u8> {
    let f = File::from(fd.try_clone().unwrap());
    let mut out = vec![0; len];
    f.read_exact_at(&mut out, 0).unwrap();
    out
}

#[test]
fn socket_scanout_with_two_memfds() {
    let (producer, element) = socket_pair().unwrap();
    let a = memfd("plane0", b"plane zero");
    let b = memfd("plane1", b"plane one!");

    send_message(producer.as_fd(), &Message::hello("test producer"), &[]).unwrap();
    let msg = scanout(2);
    send_message(producer.as_fd(), &msg, &[a.as_fd(), b.as_fd()]).unwrap();
    send_message(
        producer.as_fd(),
        &Message::Draw {
            x: 0,
            y: 0,
            w: 8,
            h: 8,
            draw_id: 42,
        },
        &[],
    )
    .unwrap();

    let mut buf = [0u8; MAX_PACKET];
    let (hello, fds) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(hello, Message::hello("test producer"));
    assert!(fds.is_empty());

    let (len, fds) = recv_packet(element.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(fds.len(), 2);
    assert_eq!(decode(&buf[..len], fds.len()).unwrap(), msg);
    for fd in &fds {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
    // The received fds are the same files, in plane order.
    assert_eq!(read_all_at0(&fds[0], 10), b"plane zero");
    assert_eq!(read_all_at0(&fds[1], 10), b"plane one!");
    // A write through the producer's fd is visible through the element's fd, even after
    // the producer closed its copy.
    File::from(a).write_all_at(b"PLANE", 0).unwrap();
    drop(b);
    assert_eq!(read_all_at0(&fds[0], 10), b"PLANE zero");
    assert_eq!(read_all_at0(&fds[1], 10), b"plane one!");

    let (draw, fds) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert!(matches!(draw, Message::Draw { draw_id: 42, .. }));
    assert!(fds.is_empty());

    // And back: DONE from the element.
    let done = Message::Done {
        draw_id: 42,
        status: DoneStatus::Released,
    };
    send_message(element.as_fd(), &done, &[]).unwrap();
    let (back, _) = recv_message(producer.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(back, done);
}

#[test]
fn socket_same_fd_twice() {
    let (producer, element) = socket_pair().unwrap();
    let a = memfd("shared", b"one buffer");
    let msg = Message::Scanout {
        width: 4,
        height: 4,
        fourcc: u32::from_le_bytes(*b"NV12"),
        y0_top: true,
        modifier: MOD_LINEAR,
        planes: vec![
            PlaneLayout {
                offset: 0,
                stride: 4,
            },
            PlaneLayout {
                offset: 16,
                stride: 4,
            },
        ],
    };
    send_message(producer.as_fd(), &msg, &[a.as_fd(), a.as_fd()]).unwrap();
    let mut buf = [0u8; MAX_PACKET];
    let (got, fds) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(got, msg);
    assert_eq!(fds.len(), 2);
    assert_eq!(read_all_at0(&fds[0], 10), b"one buffer");
    assert_eq!(read_all_at0(&fds[1], 10), b"one buffer");
}

#[test]
fn socket_eof() {
    let (producer, element) = socket_pair().unwrap();
    send_message(producer.as_fd(), &Message::scanout_disabled(), &[]).unwrap();
    drop(producer);
    let mut buf = [0u8; MAX_PACKET];
    // Packets sent before the close are still delivered, then the end.
    let (m, _) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert!(m.is_scanout_disabled());
    assert!(recv_packet(element.as_fd(), &mut buf).unwrap().is_none());
    assert!(recv_message(element.as_fd(), &mut buf).unwrap().is_none());

    // Sending to a closed peer is an error, not a SIGPIPE.
    let (a, b) = socket_pair().unwrap();
    drop(b);
    let e = send_packet(a.as_fd(), &encode(&Message::hello("x")), &[]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
}

/// Sends `bytes` with `count` copies of `fd`, bypassing [`send_packet`]'s limits.
fn send_raw(sock: &OwnedFd, bytes: &[u8], fd: BorrowedFd<'_>, count: usize) {
    let fds = vec![fd; count];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let iov = [IoSlice::new(bytes)];
    let n = rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, bytes.len());
}

/// A socket pair whose first end is only used as an fd to pass around: once every copy of
/// it is closed, the second end reads end of stream.
fn canary() -> (OwnedFd, OwnedFd) {
    socket_pair().unwrap()
}

fn assert_all_closed(watch: &OwnedFd) {
    let mut byte = [0u8; 1];
    match rustix::net::recv(watch, &mut byte, RecvFlags::DONTWAIT) {
        Ok((0, _)) => {}
        other => panic!("a copy of the passed fd is still open: {other:?}"),
    }
}

#[test]
fn socket_truncation() {
    let (producer, element) = socket_pair().unwrap();
    let mut buf = [0u8; MAX_PACKET];

    // A packet over the limit: reported, its fd closed, and the next packet is fine.
    let (passed, watch) = canary();
    send_raw(&producer, &vec![0u8; MAX_PACKET + 1], passed.as_fd(), 1);
    drop(passed);
    let e = recv_packet(element.as_fd(), &mut buf).unwrap_err();
    assert!(matches!(e, WireError::PacketTruncated));
    assert!(!e.is_fatal());
    assert_all_closed(&watch);

    // More fds than MAX_PLANES: reported, whether they all fit in the control buffer
    // (which has some alignment slack) or not (MSG_CTRUNC). Every fd that arrived is
    // closed.
    let bytes = encode(&scanout(MAX_PLANES));
    for count in [MAX_PLANES + 1, MAX_PLANES + 2, 8, 16] {
        let (passed, watch) = canary();
        send_raw(&producer, &bytes, passed.as_fd(), count);
        drop(passed);
        let e = recv_packet(element.as_fd(), &mut buf).unwrap_err();
        assert!(matches!(e, WireError::TooManyFds), "{count} fds: {e}");
        assert!(!e.is_fatal());
        assert_all_closed(&watch);
    }

    // A message that fails to decode: its fds are closed too.
    let (passed, watch) = canary();
    send_raw(&producer, &encode(&scanout(2)), passed.as_fd(), 1);
    drop(passed);
    let e = recv_message(element.as_fd(), &mut buf).unwrap_err();
    assert!(matches!(e, WireError::FdCount { planes: 2, nfds: 1 }));
    assert_all_closed(&watch);

    send_message(producer.as_fd(), &Message::hello("after"), &[]).unwrap();
    let (m, _) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(m, Message::hello("after"));

    // Exactly MAX_PACKET bytes is fine.
    let full = Message::error(1, "y".repeat(MAX_TEXT));
    send_message(element.as_fd(), &full, &[]).unwrap();
    let (m, _) = recv_message(producer.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(m, full);
}

#[test]
fn send_rejects_bad_input() {
    let (a, _b) = socket_pair().unwrap();
    let fd = memfd("x", b"x");
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(send_packet(a.as_fd(), &[], &[])),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(send_packet(a.as_fd(), &vec![0; MAX_PACKET + 1], &[])),
        io::ErrorKind::InvalidInput
    );
    let five = [fd.as_fd(); MAX_PLANES + 1];
    assert_eq!(
        kind(send_packet(a.as_fd(), b"SDMB", &five)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(send_message(a.as_fd(), &scanout(2), &[fd.as_fd()])),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(send_message(a.as_fd(), &Message::hello("x"), &[fd.as_fd()])),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn decode_error_closes_fds_and_connection_goes_on() {
    let (producer, element) = socket_pair().unwrap();
    let (passed, watch) = canary();
    // A DRAW carrying an fd: the packet is rejected, the fd closed, the stream continues.
    let draw = encode(&Message::Draw {
        x: 0,
        y: 0,
        w: 1,
        h: 1,
        draw_id: 1,
    });
    send_packet(producer.as_fd(), &draw, &[passed.as_fd()]).unwrap();
    drop(passed);
    send_message(producer.as_fd(), &Message::hello("ok"), &[]).unwrap();
    let mut buf = [0u8; MAX_PACKET];
    let e = recv_message(element.as_fd(), &mut buf).unwrap_err();
    assert!(matches!(
        e,
        WireError::UnexpectedFds {
            kind: "DRAW",
            nfds: 1
        }
    ));
    assert_all_closed(&watch);
    let (m, _) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(m, Message::hello("ok"));
}

#[test]
fn received_fds_live_until_dropped() {
    // Control for `assert_all_closed`: while the receiver holds the fds, the watched end
    // does not see end of stream.
    let (producer, element) = socket_pair().unwrap();
    let (passed, watch) = canary();
    send_message(
        producer.as_fd(),
        &scanout(2),
        &[passed.as_fd(), passed.as_fd()],
    )
    .unwrap();
    drop(passed);
    let mut buf = [0u8; MAX_PACKET];
    let (_, fds) = recv_message(element.as_fd(), &mut buf).unwrap().unwrap();
    let mut byte = [0u8; 1];
    let r = rustix::net::recv(&watch, &mut byte, RecvFlags::DONTWAIT);
    assert_eq!(r.unwrap_err(), Errno::AGAIN);
    drop(fds);
    assert_all_closed(&watch);
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The bytes shown in the example session of docs/socket-protocol.md.
#[test]
fn documented_example_bytes() {
    let hello = unhex(
        "53 44 4d 42 01 00 05 00 01 00 00 00 0f 00 00 00 \
         73 70 69 63 65 2d 73 68 69 6d 20 66 65 65 64",
    );
    assert_eq!(
        decode(&hello, 0).unwrap(),
        Message::hello("spice-shim feed")
    );

    let scanout = unhex(
        "53 44 4d 42 01 00 01 00 80 02 00 00 e0 01 00 00 \
         58 52 32 34 01 00 00 00 00 00 00 00 00 00 00 00 \
         01 00 00 00 00 00 00 00 00 0a 00 00",
    );
    let expected = Message::Scanout {
        width: 640,
        height: 480,
        fourcc: 0x3432_5258,
        y0_top: true,
        modifier: MOD_LINEAR,
        planes: vec![PlaneLayout {
            offset: 0,
            stride: 2560,
        }],
    };
    assert_eq!(decode(&scanout, 1).unwrap(), expected);
    assert_eq!(encode(&expected), scanout);

    let draw = unhex(
        "53 44 4d 42 01 00 02 00 00 00 00 00 00 00 00 00 \
         80 02 00 00 e0 01 00 00 01 00 00 00 00 00 00 00",
    );
    let expected = Message::Draw {
        x: 0,
        y: 0,
        w: 640,
        h: 480,
        draw_id: 1,
    };
    assert_eq!(decode(&draw, 0).unwrap(), expected);

    let done = unhex("53 44 4d 42 01 00 03 00 01 00 00 00 00 00 00 00 01 00 00 00");
    let expected = Message::Done {
        draw_id: 1,
        status: DoneStatus::Dropped,
    };
    assert_eq!(decode(&done, 0).unwrap(), expected);

    let mut disabled = unhex("53 44 4d 42 01 00 01 00");
    disabled.extend_from_slice(&[0; 28]);
    assert_eq!(disabled.len(), 36);
    assert_eq!(decode(&disabled, 0).unwrap(), Message::scanout_disabled());
    assert_eq!(encode(&Message::scanout_disabled()), disabled);
}
