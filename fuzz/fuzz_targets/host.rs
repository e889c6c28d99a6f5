//! Host packages: a bundle's package list, a repository's `Packages` index resolved, and dpkg's
//! database with an install planned against it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rin_bundle::host::read(data);
    if let Ok(repo) = rin_hostpkg::Repository::read(data, "arm64") {
        let requests: Vec<rin_hostpkg::Request> = ["nfs-common", "open-iscsi", "a0"]
            .iter()
            .map(|r| r.parse().expect("a request"))
            .collect();
        let _ = repo.resolve(&requests, &|_| None);
    }
    if let Ok(have) = rin_hostpkg::Have::from_status(data) {
        let set = [rin_hostpkg::Package {
            name: "nfs-common",
            version: "1:2.6.2-4",
            depends: "libc6 (>= 2.34), rpcbind | portmap",
            pre_depends: "",
            provides: "",
            requested: true,
        }];
        let _ = rin_hostpkg::plan(&set, &have);
    }
});
