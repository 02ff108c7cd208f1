//! Glue between the test guest's buffers and the host-facing API.

use gstspicedmabuf::{Plane, ScanoutInfo};
use test_guest::GuestBuffer;

/// The scanout description of a test-guest buffer: its size, fourcc and planes (all in its one
/// fd, index 0), linear, top-down.
pub fn scanout_info(buf: &GuestBuffer) -> ScanoutInfo {
    ScanoutInfo {
        width: buf.width(),
        height: buf.height(),
        fourcc: buf.fourcc(),
        modifier: 0,
        y0_top: true,
        planes: buf
            .planes()
            .iter()
            .map(|p| Plane {
                fd_index: 0,
                offset: p.offset,
                stride: p.stride,
            })
            .collect(),
    }
}
