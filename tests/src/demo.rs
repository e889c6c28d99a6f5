//! The embedded demo stack (examples/demo) in a directory of its own, with what
//! examples/demo/run.sh makes beside it: the two-arch demo image, the site registry's stand-in
//! image and K3s's stand-in files, all offline.

use crate::{bin, ok};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of examples/demo at `dir/demo`, its `build/` made as run.sh makes it: the stack
/// directory.
pub fn prepare(dir: &Path) -> PathBuf {
    let demo = dir.join("demo");
    copy_tree(&crate::repo_root().join("examples/demo"), &demo);
    let _ = std::fs::remove_dir_all(demo.join("build"));
    let fixture = |args: &[&str], out: &str, extra: &[&Path]| {
        let mut c = Command::new(bin("rin-fixture"));
        c.args(args).arg("--out").arg(demo.join(out));
        for e in extra {
            c.arg(e);
        }
        ok(&c.output().expect("rin-fixture runs"), args[0]);
    };
    let rootfs = demo.join("image");
    fixture(
        &[
            "image",
            "--name",
            "hello:0.1.0",
            "--arch",
            "amd64",
            "--arch",
            "arm64",
        ],
        "build/hello",
        &[Path::new("--rootfs"), &rootfs],
    );
    fixture(
        &["busybox-image", "--name", "registry:2.8.3"],
        "build/registry",
        &[],
    );
    fixture(&["k3s-stand-ins"], "build/k3s", &[]);
    demo
}

/// `from` copied into `to`, directories and files (no links).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for e in std::fs::read_dir(from).expect("read the directory to copy") {
        let e = e.expect("a directory entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("its type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}
