//! Links libspice_shim.so with its SONAME (libspice_shim.so.0) and a version script that
//! exports only the `spice_shim_*` functions of the C API.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=spice-shim.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libspice_shim.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/spice-shim.map");
}
