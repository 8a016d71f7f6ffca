//! Link arguments for `libnss_lbfo.so.2`.
//!
//! - The soname glibc's loader expects for an NSS service module (`libnss_<service>.so.2`).
//! - A version script so the library exports exactly the four entry points (`exports.map`).
//! - `-z defs`: every symbol must resolve at link time. Together with the release panic handler,
//!   which calls a function defined nowhere, this turns any panic path that survives optimisation
//!   into a link error (see `src/abi.rs`).
//! - `-lc` explicitly: the `libc` crate stops asking for it when its `std` feature is on, which
//!   feature unification does in a workspace build (the agent and the tests enable it).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=exports.map");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_lbfo.so.2");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/exports.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
    println!("cargo:rustc-link-lib=dylib=c");
}
