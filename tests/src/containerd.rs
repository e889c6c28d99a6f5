//! containerd run by hand for the tests, as an independent reader of images: its own root, state
//! and socket under a test directory, driven with `ctr`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// containerd 1.6 run by hand with its own root, state and socket under a test directory.
pub struct Containerd {
    child: std::process::Child,
    sock: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        let d = dir.join("containerd");
        std::fs::create_dir_all(&d).expect("containerd test directory");
        let sock = d.join("c.sock");
        let cfg = d.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\"]\n[grpc]\n  address = \"{sock}\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = sock.display()
            ),
        )
        .expect("containerd test directory");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).expect("containerd log file"))
            .spawn()
            .expect("containerd runs (apt-get install containerd runc)");
        for _ in 0..200 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(sock.exists(), "containerd did not start");
        Containerd { child, sock }
    }

    /// `ctr -a SOCK ARGS [FILE]`: its stdout.
    pub fn run(&self, args: &[&str], file: Option<&Path>) -> String {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.sock).args(args);
        if let Some(f) = file {
            c.arg(f);
        }
        crate::ok(&c.output().expect("ctr runs"), &format!("ctr {args:?}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
