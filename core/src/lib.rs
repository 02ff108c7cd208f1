//! The spice-shim server core: a SPICE server subset that streams host dmabuf scanouts to remote clients.
//!
//! The host hands over scanouts (`gl_scanout`) and draws (`gl_draw` + cookie); remote clients
//! get the frames encoded by a GStreamer pipeline as a SPICE video stream; the cookie goes back
//! when every consumer is done with the frame (see [`ledger`]).

mod channel;
mod conn;
mod cursor_channel;
mod display;
pub mod encoder;
mod encoders;
mod handshake;
mod inputs_channel;
pub mod latency;
pub mod ledger;
pub mod log;
mod main_channel;
mod mouse;
pub mod options;
mod outbox;
pub mod pipeline_files;
pub mod proto;
pub mod ratecontrol;
pub mod shim;
pub mod throttle;
pub mod ticket;
pub mod tls;
pub mod trim;

pub use shim::{
    ClientStats, Config, InputFn, OptionSpelling, Shim, ShimError, ShimStats, TlsListen,
};
