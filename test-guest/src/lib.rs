//! The test guest: renders animated test patterns into memfd-backed scanout buffers, as a
//! VM's GPU renders into dmabufs, and checks decoded pictures of those patterns.
//!
//! - [`GuestBuffer`]: one mapped memfd holding an XRGB8888 (DRM `XR24`) or NV12 image with
//!   any stride and offset.
//! - [`Pattern`] and [`render`]: colour bars with a moving square, a frame counter, a solid
//!   colour, a desktop (text scrolling, a window dragged, a blinking caret) or video (a
//!   camera moving over a landscape); [`damage`] says what changed between two frames and
//!   [`render_update`] redraws only that.
//! - [`arrow`] and [`pointer_path`]: the guest's pointer and where it moves.
//! - [`Guest`]: a ring of buffers for hosts, which never redraws a buffer still in use.
//! - [`Image`], [`read_ppm`], [`check_bars`], [`check_upright_bars`], [`read_counter`]:
//!   checks for tests on decoded (lossy) pictures, e.g. client screenshots.
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod buffer;
mod check;
mod counter;
mod cursor;
mod desktop;
mod error;
mod font;
mod image;
mod pattern;
mod ring;
mod video;

pub use buffer::{DRM_FORMAT_NV12, DRM_FORMAT_XRGB8888, Format, GuestBuffer, MAX_DIMENSION, Plane};
pub use check::{check_bars, check_upright_bars};
pub use counter::{ChannelOrder, counter_value, read_counter};
pub use cursor::{ARROW_BODY, ARROW_OUTLINE, ARROW_SIZE, arrow, pointer_path};
pub use desktop::{BLINK_FRAMES, SCROLL_FRAMES};
pub use error::{Error, Result};
pub use image::{Image, parse_ppm, read_ppm};
pub use pattern::{
    BARS, Bar, GREY, Pattern, Rect, bar_span, damage, damage_bounds, moving_square, render,
    render_update, render_xrgb,
};
pub use ring::Guest;
