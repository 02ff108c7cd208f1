//! C ABI: see include/spice-shim.h.
