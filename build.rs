//! Build script. Without the `tch` feature it does nothing.
//!
//! With `tch`, it makes the binary find libtorch and its CUDA half at run time:
//! - an rpath to the libtorch lib dir torch-sys linked against (DEP_TCH_LIBTORCH_LIB, which
//!   torch-sys exports through its `links = "tch"` key), so `ckpt` runs without LD_LIBRARY_PATH
//!   on the machine that built it (LD_LIBRARY_PATH still wins, which is how another machine's
//!   torch is used);
//! - `-Wl,--no-as-needed -ltorch_cuda -ltorch` when that libtorch has libtorch_cuda.so. ckpt
//!   calls no CUDA symbol directly, so with the default `--as-needed` the linker drops
//!   libtorch_cuda and libtorch then reports no CUDA device even on a GPU machine.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        // torch-sys only exports the dir on Linux and macOS.
        println!("cargo:warning=torch-sys did not say where libtorch is; no rpath added");
        println!("cargo:rustc-env=CKPT_LIBTORCH_LIB=");
        println!("cargo:rustc-env=CKPT_LIBTORCH_CUDA=0");
        return;
    };
    let cuda = lib.join("libtorch_cuda.so").exists();
    println!("cargo:rustc-env=CKPT_LIBTORCH_LIB={}", lib.display());
    println!("cargo:rustc-env=CKPT_LIBTORCH_CUDA={}", if cuda { 1 } else { 0 });
    match os.as_str() {
        "linux" => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
            if cuda {
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
                println!("cargo:rustc-link-arg=-ltorch_cuda");
                println!("cargo:rustc-link-arg=-ltorch");
                println!("cargo:rustc-link-arg=-Wl,--as-needed");
            }
        }
        "macos" => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display()),
        _ => {}
    }
}
