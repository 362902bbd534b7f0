//! Whether any program of wakuprof's probe is still loaded: every test that attaches the probe
//! (wakuprof's live tests, wakusim's probe test) checks it once its run has ended.

use std::process::Command;

/// The probe's programs, as `bpftool prog list` names them.
pub const PROGRAMS: [&str; 6] = [
    "count_ingress",
    "count_egress",
    "owner_at_create",
    "owner_at_send",
    "owner_at_recv",
    "socket_state",
];

/// Asserts that none of the probe's programs is loaded after `who` exited.
pub fn assert_nothing_attached(who: &str) {
    let out = Command::new("bpftool")
        .args(["prog", "list"])
        .output()
        .expect("bpftool runs");
    let list = String::from_utf8_lossy(&out.stdout);
    for p in PROGRAMS {
        assert!(
            !list.contains(&format!("name {p} ")),
            "program {p} is still loaded after {who} exited:\n{list}"
        );
    }
}
