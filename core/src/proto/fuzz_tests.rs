//! No-panic checks: every parser is fed random and truncated input.

use super::*;

/// Tiny xorshift64* generator; deterministic so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Random bytes, sometimes with small or extreme u32 words, which are
    /// the interesting values for counts and offsets.
    fn structured(&mut self, len: usize) -> Vec<u8> {
        let mut out = self.bytes(len);
        for chunk in out.chunks_mut(4) {
            match self.below(4) {
                0 => chunk.fill(0),
                1 => chunk.fill(0xFF),
                2 => {
                    let small = (self.below(40) as u32).to_le_bytes();
                    chunk.copy_from_slice(&small[..chunk.len()]);
                }
                _ => {}
            }
        }
        out
    }
}

/// Runs every client-facing parser on `bytes`; none may panic.
fn parse_everything(bytes: &[u8]) {
    let _ = LinkHeader::parse(bytes);
    let _ = LinkHeader::parse_client(bytes);
    let _ = LinkMess::parse(bytes);
    let _ = LinkReply::parse(bytes);
    let _ = parse_auth_mechanism(bytes);
    for msg_type in (0u16..10).chain(99..120).chain(300..325).chain([u16::MAX]) {
        let _ = parse_client_base(msg_type, bytes);
        let _ = parse_client_main(msg_type, bytes);
        let _ = parse_client_display(msg_type, bytes);
        let _ = parse_client_inputs(msg_type, bytes);
    }
    for kind in [HeaderKind::Mini, HeaderKind::Full] {
        for limit in [0, 16, DEFAULT_MAX_CLIENT_MESSAGE, usize::MAX] {
            let mut dec = FrameDecoder::new(kind, limit);
            dec.push(bytes);
            for _ in 0..bytes.len() + 1 {
                match dec.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

/// Valid messages whose every prefix must be rejected or parsed cleanly.
fn valid_samples() -> Vec<Vec<u8>> {
    let mut link = LinkMess {
        connection_id: 0,
        channel_type: 1,
        channel_id: 0,
        common_caps: Caps::from_words(vec![0x0D]),
        channel_caps: Caps::from_words(vec![0x0F]),
    }
    .to_bytes();
    let link_body = link.split_off(16);
    let reply = build_link_reply(0, &[0x30; 162], &[0x0B], &[1, 2]);
    let mut samples = vec![link, link_body, reply[16..].to_vec(), reply];
    samples.push(vec![1, 0x20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x30, 0]);
    samples.push(vec![0x55; 32]);
    samples.push(vec![3, 3, 1, 2]);
    samples.push(vec![1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    samples
}

#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = rng.below(300) as usize;
        let bytes = if rng.below(2) == 0 {
            rng.bytes(len)
        } else {
            rng.structured(len)
        };
        parse_everything(&bytes);
    }
}

#[test]
fn truncated_valid_input_never_panics() {
    for sample in valid_samples() {
        for end in 0..=sample.len() {
            parse_everything(&sample[..end]);
        }
    }
}

#[test]
fn random_link_messages_with_plausible_headers() {
    let mut rng = XorShift(42);
    for _ in 0..2000 {
        let len = 18 + rng.below(40) as usize;
        let mut body = rng.structured(len);
        // Keep counts small sometimes so the caps path is reached.
        if rng.below(2) == 0 {
            body[6..10].copy_from_slice(&(rng.below(4) as u32).to_le_bytes());
            body[10..14].copy_from_slice(&(rng.below(4) as u32).to_le_bytes());
            body[14..18].copy_from_slice(&(rng.below(40) as u32).to_le_bytes());
        }
        if let Ok(mess) = LinkMess::parse(&body) {
            let words = mess.common_caps.words().len() + mess.channel_caps.words().len();
            assert!(18 + 4 * words <= body.len());
        }
    }
}

#[test]
fn random_chunking_of_random_frames_never_panics() {
    let mut rng = XorShift(7);
    for _ in 0..300 {
        let kind = if rng.below(2) == 0 {
            HeaderKind::Mini
        } else {
            HeaderKind::Full
        };
        let mut dec = FrameDecoder::new(kind, 64);
        let len = rng.below(400) as usize;
        let stream = rng.structured(len);
        let mut pos = 0;
        'feed: while pos < stream.len() {
            let n = (1 + rng.below(20) as usize).min(stream.len() - pos);
            dec.push(&stream[pos..pos + n]);
            pos += n;
            loop {
                match dec.next_message() {
                    Ok(Some((msg_type, body))) => {
                        assert!(body.len() <= 64);
                        let _ = parse_client_display(msg_type, &body);
                        let _ = parse_client_inputs(msg_type, &body);
                        let _ = parse_client_main(msg_type, &body);
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}
