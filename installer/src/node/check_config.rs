//! `k3s check-config` of the K3s binary this node runs: K3s's own check of the kernel's
//! configuration (namespaces, cgroups, netfilter, overlay, VXLAN), the iptables version, the
//! cgroup hierarchy and the key limits. Run before K3s is first started by apply, and by
//! `doctor`. It unpacks K3s's bundled binaries into K3s's data directory first, as K3s itself
//! does when it starts, so it runs only on the real root, where K3s is about to run anyway.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `k3s check-config` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Each line it marked `(fail)`, without the mark (`CONFIG_BRIDGE_NETFILTER: missing`).
    pub failures: Vec<String>,
    /// Its last line, `STATUS: pass` or `STATUS: N (fail)`.
    pub status: String,
}

/// The longest check-config may take (it unpacks K3s's binaries first: seconds on a Raspberry
/// Pi, more on a slow card).
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// Read check-config's output (printed with `NO_COLOR`).
pub fn parse(stdout: &str) -> Report {
    let mut failures = Vec::new();
    let mut status = String::new();
    for line in stdout.lines() {
        let l = line.trim().trim_start_matches("- ").trim();
        if l.starts_with("STATUS:") {
            status = l.to_string();
        } else if let Some(f) = l.strip_suffix("(fail)") {
            failures.push(f.trim().to_string());
        }
    }
    Report { failures, status }
}

/// Run `BINARY check-config` (bounded by `timeout`). Err: it could not run or judge (no kernel
/// configuration to read), with why; the caller reports that, not a failure.
pub fn run(binary: &Path, timeout: Duration) -> Result<Report, String> {
    let mut child = Command::new(binary)
        .arg("check-config")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} check-config: {e}", binary.display()))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} check-config did not finish in {} s",
                    binary.display(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for check-config: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let report = parse(&stdout);
    if status.success() || !report.failures.is_empty() {
        return Ok(report);
    }
    let why = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string();
    Err(format!(
        "check-config could not judge this node ({status}): {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What K3s's check-config prints with NO_COLOR (its format), failures included.
    pub const SAMPLE: &str = "
Verifying binaries in /var/lib/rancher/k3s/data/abc/bin:
- sha256sum: good
- links: good

System:
- /usr/sbin iptables v1.8.9 (nf_tables): ok
- swap: should be disabled
- routes: ok

Limits:
- /proc/sys/kernel/keys/root_maxkeys: 1000000

info: reading kernel config from /proc/config.gz ...

Generally Necessary:
- cgroup hierarchy: cgroups V2 mounted, cpu|cpuset|memory controllers status: good
- CONFIG_NAMESPACES: enabled
- CONFIG_BRIDGE_NETFILTER: missing (fail)
- CONFIG_IP_NF_NAT: enabled (as module)
- CONFIG_VXLAN: missing (fail)

Optional Features:
- CONFIG_USER_NS: enabled

STATUS: 2 (fail)
";

    #[test]
    fn failures_and_status_are_read_from_checkconfig_output() {
        let r = parse(SAMPLE);
        assert_eq!(
            r.failures,
            ["CONFIG_BRIDGE_NETFILTER: missing", "CONFIG_VXLAN: missing"]
        );
        assert_eq!(r.status, "STATUS: 2 (fail)");
        let pass = parse("- CONFIG_VXLAN: enabled\n\nSTATUS: pass\n");
        assert!(pass.failures.is_empty());
        assert_eq!(pass.status, "STATUS: pass");
    }

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("k3s");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_binary_is_run_with_no_colour_and_its_verdict_kept() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("out"), SAMPLE).unwrap();
        let failing = script(
            t.path(),
            &format!(
                "[ \"$1\" = check-config ] && [ \"$NO_COLOR\" = 1 ] || exit 9\ncat {}\nexit 2",
                t.path().join("out").display()
            ),
        );
        let r = run(&failing, TIMEOUT).unwrap();
        assert_eq!(r.failures.len(), 2);
        let no_config = script(
            t.path(),
            "echo 'error: cannot find kernel config ' >&2\nexit 1",
        );
        let err = run(&no_config, TIMEOUT).unwrap_err();
        assert!(err.contains("cannot find kernel config"), "{err}");
        let slow = script(t.path(), "sleep 30");
        let err = run(&slow, Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
