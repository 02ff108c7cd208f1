//! Video codec types (`SpiceVideoCodecType`) and their names and client caps.

use std::fmt;
use std::str::FromStr;

use super::caps::display_cap;

/// Video codec of a stream (u8 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VideoCodec {
    /// Motion JPEG (decoded by the client's builtin libjpeg path).
    Mjpeg = 1,
    /// VP8.
    Vp8 = 2,
    /// H.264 (Annex-B, AU-aligned, parameter sets in band).
    H264 = 3,
    /// VP9.
    Vp9 = 4,
    /// H.265 (Annex-B, AU-aligned, parameter sets in band).
    H265 = 5,
}

/// Error for a codec name that is none of mjpeg, vp8, h264, vp9, h265.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown video codec {0:?} (expected one of mjpeg, vp8, h264, vp9, h265)")]
pub struct UnknownCodecName(pub String);

impl VideoCodec {
    /// Every codec, in wire-value order.
    pub const ALL: [VideoCodec; 5] = [
        VideoCodec::Mjpeg,
        VideoCodec::Vp8,
        VideoCodec::H264,
        VideoCodec::Vp9,
        VideoCodec::H265,
    ];

    /// The codec for a wire value, if known.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u8 == value)
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Lower-case name: "mjpeg", "vp8", "h264", "vp9" or "h265".
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Mjpeg => "mjpeg",
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::H265 => "h265",
        }
    }

    /// The display channel cap a client sets when it can decode this codec.
    pub fn client_cap(self) -> u32 {
        match self {
            VideoCodec::Mjpeg => display_cap::CODEC_MJPEG,
            VideoCodec::Vp8 => display_cap::CODEC_VP8,
            VideoCodec::H264 => display_cap::CODEC_H264,
            VideoCodec::Vp9 => display_cap::CODEC_VP9,
            VideoCodec::H265 => display_cap::CODEC_H265,
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VideoCodec {
    type Err = UnknownCodecName;

    /// Parses a codec name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCodecName(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_names_and_caps() {
        let table = [
            (VideoCodec::Mjpeg, 1, "mjpeg", 9),
            (VideoCodec::Vp8, 2, "vp8", 10),
            (VideoCodec::H264, 3, "h264", 11),
            (VideoCodec::Vp9, 4, "vp9", 13),
            (VideoCodec::H265, 5, "h265", 14),
        ];
        for (codec, value, name, cap) in table {
            assert_eq!(codec.to_u8(), value);
            assert_eq!(VideoCodec::from_u8(value), Some(codec));
            assert_eq!(codec.name(), name);
            assert_eq!(codec.to_string(), name);
            assert_eq!(name.parse::<VideoCodec>().unwrap(), codec);
            assert_eq!(name.to_uppercase().parse::<VideoCodec>().unwrap(), codec);
            assert_eq!(codec.client_cap(), cap);
        }
        assert_eq!(VideoCodec::from_u8(0), None);
        assert_eq!(VideoCodec::from_u8(6), None);
        assert!("av1".parse::<VideoCodec>().is_err());
    }
}
