//! Installing what the project needs on a fresh Debian machine: libpcap for the build, tshark,
//! DuckDB and Chromium for the tests. Each step is skipped when its tool is already there.

use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages, each with a file whose presence shows it is installed.
pub struct Package {
    pub name: &'static str,
    pub marker: &'static str,
}

/// What building wakuprof needs.
pub const BUILD: &[Package] = &[Package {
    name: "libpcap-dev",
    marker: "/usr/include/pcap/pcap.h",
}];

/// What the test suite needs besides the build: tshark as the reference dissector, bpftool to
/// check that no probe program stays loaded, iproute2 for the network namespaces, ethtool to turn
/// segmentation offload off, Chromium to render the HTML report headless, Python's cryptography
/// as the independent check of wakusim's signed-shard rule.
pub const TEST: &[Package] = &[
    Package {
        name: "tshark",
        marker: "/usr/bin/tshark",
    },
    Package {
        name: "bpftool",
        marker: "/usr/sbin/bpftool",
    },
    Package {
        name: "iproute2",
        marker: "/usr/sbin/ip",
    },
    Package {
        name: "ethtool",
        marker: "/usr/sbin/ethtool",
    },
    Package {
        name: "chromium",
        marker: "/usr/bin/chromium",
    },
    Package {
        name: "python3-cryptography",
        marker: "/usr/lib/python3/dist-packages/cryptography/__init__.py",
    },
];

/// Installs the missing packages with apt-get (as root), or says exactly what to run.
pub fn ensure_packages(pkgs: &[Package]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .filter(|p| !std::path::Path::new(p.marker).exists())
        .map(|p| p.name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!("missing Debian packages; install them with: sudo apt-get install -y {list}");
    }
    eprintln!("xtask: installing {list}");
    // Another apt-get (an unattended upgrade, a parallel setup) may hold dpkg's lock: wait for it.
    let wait = ["-o", "DPkg::Lock::Timeout=600"];
    run(Command::new("apt-get").args(wait).args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(wait)
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Installs the `duckdb` Python module the Parquet tests read results with.
pub fn ensure_duckdb() -> anyhow::Result<()> {
    let have = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing the duckdb Python module");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "duckdb",
    ]))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a command, failing with its name when it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let name = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {name}"))?;
    if !status.success() {
        bail!("{name} failed with {status}");
    }
    Ok(())
}

/// `cargo`, as the one running xtask, started in xtask's own directory.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// The bpf-linker release the probe is built with.
const BPF_LINKER: &str = "bpf-linker@0.13.0";

/// Installs what building the eBPF probe needs: the nightly toolchain's `rust-src` and
/// bpf-linker linked against that nightly's own libLLVM (see ebpf/probe). Skipped when
/// bpf-linker is on PATH. Failure is reported, not fatal: wakuprof then builds without the probe.
pub fn ensure_probe_toolchain() {
    if let Err(e) = probe_toolchain() {
        eprintln!(
            "xtask: the eBPF probe toolchain could not be installed ({e:#}); wakuprof builds without the probe (live --source pcap still works)"
        );
    }
}

fn probe_toolchain() -> anyhow::Result<()> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()));
    if on_path || home.join("bin/bpf-linker").is_file() {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly rust-src component");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("cannot ask the nightly toolchain for its sysroot")?;
    let lib = std::path::Path::new(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let name = llvm.trim_start_matches("lib").trim_end_matches(".so");
    let major = name
        .trim_start_matches("LLVM-")
        .split(['-', '.'])
        .next()
        .unwrap_or_default();
    eprintln!("xtask: building {BPF_LINKER} against the nightly's {llvm} (about 80 s)");
    let flags = format!(
        "-L {lib} -l dylib={name} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    let target = tempfile::tempdir().context("cannot make a build directory")?;
    run(Command::new("cargo")
        .args(["install", BPF_LINKER, "--locked", "--no-default-features"])
        .args(["--features", &format!("llvm-{major},no-llvm-linking")])
        .env("RUSTFLAGS", flags)
        .env("CARGO_TARGET_DIR", target.path()))
}
