//! The `spice-shim` program's front ends: `serve` (the built-in test guest), `feed` (the test
//! guest as a producer for `spicedmabufsrc socket-path=…`) and `qemu` (QEMU's D-Bus display).
//! The server itself is `spice-shim-core`; the test guest is linked here only.

pub mod feed;
pub mod guest;
pub mod qemu;
pub mod serve;
pub mod server_args;
