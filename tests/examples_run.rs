//! The building-blocks example (`examples/building_blocks.rs`) runs and agrees with its closed
//! forms (it exits with an error otherwise). `cargo test` builds the examples next to the tests.

use std::process::Command;

#[test]
fn building_blocks_example_agrees_with_its_closed_forms() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir
        .join("examples")
        .join(format!("building_blocks{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built", bin.display());
    let out = Command::new(&bin).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all building blocks agree"), "{text}");
    // Each of the three blocks printed its line.
    for what in ["Gaussian MI", "OGM score of audio", "OGM-GE coefficient"] {
        assert!(text.contains(what), "{what}: {text}");
    }
}
