//! Builds the citizen pages' scripts and styles from `frontend/` with npm and esbuild, and lists
//! them for `include_bytes!` so the binary carries its whole web interface.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let frontend = Path::new("frontend");
    for watched in ["src", "build.mjs", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed=frontend/{watched}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("frontend");

    if !frontend.join("node_modules/.package-lock.json").exists() {
        // `npm ci` installs exactly the locked versions; the lock file is committed.
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(frontend));
    }
    run(Command::new("node")
        .arg("build.mjs")
        .arg(&out)
        .current_dir(frontend));

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("frontend build output")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut listing = String::from("&[\n");
    for name in names {
        listing.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}) as &[u8]),\n",
            out.join(&name).display().to_string()
        ));
    }
    listing.push(']');
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("assets.rs"),
        listing,
    )
    .expect("write assets.rs");
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (Node.js and npm are required)"));
    assert!(status.success(), "{command:?} failed: {status}");
}
