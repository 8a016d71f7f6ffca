//! Link arguments for `libnss_lbfo.so.2`.
//!
//! - The soname glibc's loader expects for an NSS service module (`libnss_<service>.so.2`).
//! - A version script so the library exports exactly the four entry points and the nscd init hook
//!   (`exports.map`).
//! - `-z defs`: every symbol must resolve at link time. Together with the release panic handler,
//!   which calls a function defined nowhere, this turns any panic path that survives optimisation
//!   into a link error (see `src/abi.rs`).
//! - `-lc` explicitly: the `libc` crate stops asking for it when its `std` feature is on, which
//!   feature unification does in a workspace build (the agent and the tests enable it).
//!
//! `LBFO_NSS_SANITIZER=1` (set by `scripts/sanitize.sh` only) drops `-z defs` and nothing else: a
//! module built with `-Zsanitizer=address` calls into the sanitizer runtime, which lives in the
//! executable that loads it, so those symbols cannot resolve at link time. Such a build is a dev
//! build, whose panic handler aborts instead of naming the undefined symbol, so the no-panic proof
//! is neither needed nor weakened there: the release build, the one that ships, keeps it.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=exports.map");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LBFO_NSS_SANITIZER");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_lbfo.so.2");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/exports.map");
    let sanitizer = std::env::var_os("LBFO_NSS_SANITIZER").is_some_and(|v| v == "1");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    assert!(
        !(sanitizer && release),
        "LBFO_NSS_SANITIZER=1 is for dev builds: a release build keeps -z defs (the no-panic proof)"
    );
    if !sanitizer {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
    }
    println!("cargo:rustc-link-lib=dylib=c");
}
