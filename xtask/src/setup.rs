//! Installing what the project needs on a fresh Debian machine: libpcap for the build, tshark and
//! DuckDB for the tests. Each step is skipped when its tool is already there.

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

/// What the test suite needs besides the build: tshark as the reference dissector.
pub const TEST: &[Package] = &[Package {
    name: "tshark",
    marker: "/usr/bin/tshark",
}];

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
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
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
