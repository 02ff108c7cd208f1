//! Capability bit sets as exchanged in link messages.
//!
//! Capability number N is bit `N % 32` of word `N / 32`.

/// Common capabilities (the same list on every channel).
pub mod common_cap {
    /// The client sends an auth mechanism word before the ticket.
    pub const PROTOCOL_AUTH_SELECTION: u32 = 0;
    /// SPICE ticket auth (RSA-OAEP).
    pub const AUTH_SPICE: u32 = 1;
    /// SASL auth; a server must not advertise it unless it implements SASL.
    pub const AUTH_SASL: u32 = 2;
    /// Six-byte mini data header.
    pub const MINI_HEADER: u32 = 3;
}

/// Main channel capabilities.
pub mod main_cap {
    /// Semi-seamless migration.
    pub const SEMI_SEAMLESS_MIGRATE: u32 = 0;
    /// NAME and UUID messages.
    pub const NAME_AND_UUID: u32 = 1;
    /// AGENT_CONNECTED_TOKENS message.
    pub const AGENT_CONNECTED_TOKENS: u32 = 2;
    /// Seamless migration.
    pub const SEAMLESS_MIGRATE: u32 = 3;
}

/// Display channel capabilities.
pub mod display_cap {
    /// STREAM_DATA_SIZED.
    pub const SIZED_STREAM: u32 = 0;
    /// MONITORS_CONFIG; a server advertising it must send the message.
    pub const MONITORS_CONFIG: u32 = 1;
    /// DRAW_COMPOSITE.
    pub const COMPOSITE: u32 = 2;
    /// A8 surfaces.
    pub const A8_SURFACE: u32 = 3;
    /// STREAM_REPORT / STREAM_ACTIVATE_REPORT.
    pub const STREAM_REPORT: u32 = 4;
    /// LZ4 image compression.
    pub const LZ4_COMPRESSION: u32 = 5;
    /// PREFERRED_COMPRESSION (server cap).
    pub const PREF_COMPRESSION: u32 = 6;
    /// GL_SCANOUT_UNIX / GL_DRAW (only usable over AF_UNIX).
    pub const GL_SCANOUT: u32 = 7;
    /// Non-MJPEG codecs and the STREAMING_MODE surface flag.
    pub const MULTI_CODEC: u32 = 8;
    /// MJPEG decoder.
    pub const CODEC_MJPEG: u32 = 9;
    /// VP8 decoder.
    pub const CODEC_VP8: u32 = 10;
    /// H.264 decoder.
    pub const CODEC_H264: u32 = 11;
    /// PREFERRED_VIDEO_CODEC_TYPE (server cap).
    pub const PREF_VIDEO_CODEC_TYPE: u32 = 12;
    /// VP9 decoder.
    pub const CODEC_VP9: u32 = 13;
    /// H.265 decoder.
    pub const CODEC_H265: u32 = 14;
}

/// Inputs channel capabilities.
pub mod inputs_cap {
    /// The client sends KEY_SCANCODE.
    pub const KEY_SCANCODE: u32 = 0;
}

/// Common caps a server advertises: AUTH_SELECTION, AUTH_SPICE and
/// MINI_HEADER, never SASL.
pub const SERVER_COMMON_CAPS: [u32; 3] = [
    common_cap::PROTOCOL_AUTH_SELECTION,
    common_cap::AUTH_SPICE,
    common_cap::MINI_HEADER,
];

/// A set of capability bits, stored as the wire words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    words: Vec<u32>,
}

impl Caps {
    /// Wraps the words as received on the wire.
    pub fn from_words(words: Vec<u32>) -> Self {
        Self { words }
    }

    /// Builds the set from capability numbers.
    pub fn from_bits(bits: &[u32]) -> Self {
        Self {
            words: words_from_bits(bits),
        }
    }

    /// Whether capability `bit` is set.
    pub fn has(&self, bit: u32) -> bool {
        let word = usize::try_from(bit / 32).unwrap_or(usize::MAX);
        self.words
            .get(word)
            .is_some_and(|w| w & (1u32 << (bit % 32)) != 0)
    }

    /// Sets capability `bit`, growing the word list as needed. Meant for the
    /// server's own (small) capability numbers, not for peer input.
    pub fn set(&mut self, bit: u32) {
        let word = (bit / 32) as usize;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1u32 << (bit % 32);
    }

    /// The wire words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// Encodes capability numbers as wire words: `ceil((max + 1) / 32)` words,
/// or none for an empty list.
pub fn words_from_bits(bits: &[u32]) -> Vec<u32> {
    let mut caps = Caps::default();
    for &bit in bits {
        caps.set(bit);
    }
    caps.words
}

/// The common caps words a server sends (`[0x0000000B]`).
pub fn server_common_caps_words() -> Vec<u32> {
    words_from_bits(&SERVER_COMMON_CAPS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_common_caps_are_0x0b_without_sasl() {
        let words = server_common_caps_words();
        assert_eq!(words, vec![0x0000_000B]);
        let caps = Caps::from_words(words);
        assert!(caps.has(common_cap::PROTOCOL_AUTH_SELECTION));
        assert!(caps.has(common_cap::AUTH_SPICE));
        assert!(caps.has(common_cap::MINI_HEADER));
        assert!(!caps.has(common_cap::AUTH_SASL));
    }

    #[test]
    fn words_span_multiple_u32() {
        assert_eq!(words_from_bits(&[]), Vec::<u32>::new());
        assert_eq!(words_from_bits(&[31]), vec![0x8000_0000]);
        assert_eq!(words_from_bits(&[32]), vec![0, 1]);
        let caps = Caps::from_bits(&[0, 33, 64]);
        assert_eq!(caps.words(), &[1, 2, 1]);
        assert!(caps.has(33) && caps.has(64) && !caps.has(65) && !caps.has(u32::MAX));
    }

    #[test]
    fn observed_client_display_caps() {
        let caps = Caps::from_words(vec![0x0000_6FBF]);
        for bit in [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14] {
            assert!(caps.has(bit), "bit {bit}");
        }
        assert!(!caps.has(display_cap::PREF_COMPRESSION));
        assert!(!caps.has(display_cap::PREF_VIDEO_CODEC_TYPE));
        let no_gl = Caps::from_words(vec![0x0000_6F2F]);
        assert!(!no_gl.has(display_cap::GL_SCANOUT));
        assert!(!no_gl.has(display_cap::STREAM_REPORT));
        assert!(Caps::default().is_empty());
    }
}
