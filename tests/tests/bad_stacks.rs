//! The builder refuses broken inputs with the cause, and leaves no output behind.

#![allow(clippy::unwrap_used)]

use rin_builder::{BuildError, BuildOptions, Stack};
use rin_bundle::Silent;
use rin_tests::craft::{CREATED, keys};
use rin_tests::fixture::write_stack;
use std::fs;
use std::path::Path;

/// Write the fixture stack, let `break_it` damage it, build both arches, return the error.
fn build_broken(break_it: impl FnOnce(&Path)) -> BuildError {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    break_it(&stack);
    let out = tmp.path().join("b.tar.zst");
    let opts = BuildOptions {
        arches: vec!["amd64".parse().unwrap(), "arm64".parse().unwrap()],
        keys: keys(1),
        output: out.clone(),
        created: CREATED,
        threads: 1,
        ..Default::default()
    };
    let err = Stack::load(&stack)
        .and_then(|s| rin_builder::build(&s, &opts, &Silent))
        .unwrap_err();
    rin_tests::assert_only(tmp.path(), &["stack"], "refused build");
    assert!(err.hint().is_some(), "no hint for {err}");
    err
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn a_damaged_layer_in_the_source_layout() {
    let err = build_broken(|stack| {
        // The largest blob of the layout is a layer; change one byte of it.
        let blobs = stack.join("images/blobs/sha256");
        let biggest = fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .unwrap();
        let mut b = fs::read(&biggest).unwrap();
        b[10] ^= 1;
        fs::write(&biggest, b).unwrap();
    });
    assert!(matches!(err, BuildError::DigestMismatch { .. }), "{err}");
}

#[test]
fn a_chart_that_is_not_what_bundle_yaml_says() {
    let err = build_broken(|stack| {
        edit(
            &stack.join("bundle.yaml"),
            "version: 0.1.0\n    archive",
            "version: 0.2.0\n    archive",
        )
    });
    match err {
        BuildError::Chart { reason, .. } => assert!(
            reason.contains("holds demo 0.1.0, bundle.yaml says demo 0.2.0"),
            "{reason}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn k3s_files_that_fail_their_checksum_or_are_missing() {
    let err =
        build_broken(|stack| fs::write(stack.join("k3s/k3s-arm64"), b"tampered binary").unwrap());
    assert!(
        matches!(err, BuildError::DigestMismatch { ref path, .. } if path.ends_with("k3s/k3s-arm64")),
        "{err}"
    );
    let err = build_broken(|stack| fs::remove_file(stack.join("k3s/k3s-arm64")).unwrap());
    assert!(
        matches!(err, BuildError::K3s { ref reason, .. } if reason.contains("k3s-arm64")),
        "{err}"
    );
}

#[test]
fn links_clashing_paths_and_repeated_images() {
    let err = build_broken(|stack| {
        std::os::unix::fs::symlink("/etc/passwd", stack.join("manifests/link.yaml")).unwrap()
    });
    assert!(
        matches!(err, BuildError::Read { ref path, .. } if path.ends_with("manifests/link.yaml")),
        "{err}"
    );

    let err = build_broken(|stack| {
        fs::create_dir(stack.join("more")).unwrap();
        fs::write(stack.join("more/notes.txt"), b"other notes").unwrap();
        edit(
            &stack.join("bundle.yaml"),
            "files: [notes.txt]",
            "files: [notes.txt, more/notes.txt]",
        );
    });
    assert!(
        matches!(err, BuildError::PathClash { ref path } if path == "files/notes.txt"),
        "{err}"
    );

    let err = build_broken(|stack| {
        edit(
            &stack.join("bundle.yaml"),
            "charts:",
            "  - reference: registry.example/demo/web:1.0\n    layout: images\ncharts:",
        )
    });
    assert!(
        matches!(err, BuildError::Spec { ref reason, .. } if reason.contains("listed twice")),
        "{err}"
    );
}

#[test]
fn an_image_layout_that_was_never_made() {
    let err = build_broken(|stack| fs::remove_dir_all(stack.join("images")).unwrap());
    assert!(matches!(err, BuildError::NoLayout { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.hint().unwrap().contains("skopeo copy"), "{err}");
}
