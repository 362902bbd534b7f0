//! Builds the eBPF probe (`ebpf/probe`) and embeds it, when the toolchain for it is here: the
//! nightly compiler with `rust-src` and `bpf-linker` (`cargo xtask setup` installs both).
//! Without them the binary is built without the probe and `live --source ebpf` says so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(probe_embedded)");
    println!("cargo::rerun-if-env-changed=WAKUPROF_NO_PROBE");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let ebpf = manifest.join("../ebpf");
    for p in [
        "probe/src",
        "probe/Cargo.toml",
        "probe/Cargo.lock",
        "common/src",
    ] {
        println!("cargo::rerun-if-changed={}", ebpf.join(p).display());
    }
    if std::env::var_os("WAKUPROF_NO_PROBE").is_some() {
        return;
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    let linker = home.join("bin/bpf-linker");
    // A missing file makes cargo rerun this script on every build, so installing the linker
    // later is noticed.
    println!("cargo::rerun-if-changed={}", linker.display());
    if !linker.exists() && !on_path("bpf-linker") {
        println!(
            "cargo::warning=eBPF probe not built: bpf-linker is missing (run `cargo xtask setup`)"
        );
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: share one probe build per target dir.
    let target = out.ancestors().nth(4).unwrap_or(&out).join("bpf");
    let mut cmd = Command::new("rustup");
    cmd.env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| {
            ["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME"]
                .iter()
                .any(|keep| k == keep)
        }))
        .current_dir(ebpf.join("probe"))
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .arg("--target-dir")
        .arg(&target)
        // This script's stdout is read by cargo: the nested build's output goes to stderr.
        .stdout(std::io::stderr());
    let built = cmd.status().map(|s| s.success()).unwrap_or(false);
    let object = target.join("bpfel-unknown-none/release/wakuprof-probe");
    if !built || !object.exists() {
        println!(
            "cargo::warning=eBPF probe not built: `cargo +nightly build` in ebpf/probe failed (see its output above; `cargo xtask setup` installs the toolchain)"
        );
        return;
    }
    println!("cargo::rustc-cfg=probe_embedded");
    println!(
        "cargo::rustc-env=WAKUPROF_PROBE_OBJECT={}",
        object.display()
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
