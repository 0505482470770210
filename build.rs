//! Compiles `bpf/steer.bpf.c` into an object file and a libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/steer.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = match arch.as_str() {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([
            "-O2".to_string(),
            "-Wall".to_string(),
            "-Ibpf".to_string(),
            format!("-I/usr/include/{multiarch}"),
        ])
        .build_and_generate(out.join("steer.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("building {SRC} failed (needs clang, libbpf-dev, gcc-multilib): {e:#}")
        });
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=bpf/steer.h");
}
