//! spice-shim: a SPICE server subset that streams host dmabuf scanouts to remote clients.

pub mod ledger;
pub mod proto;
pub mod ticket;
