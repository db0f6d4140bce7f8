//! What the interop tests share: where the corpus is, and its files.

use std::path::{Path, PathBuf};

/// The corpus (`tests/data`).
pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// Every file under `dir`, but the folders' own notes (SOURCE.md, README.md, LICENSE).
pub fn corpus(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if !["SOURCE.md", "LICENSE", "README.md"].contains(&path.file_name().unwrap().to_str().unwrap()) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&data().join(dir), &mut files);
    files.sort();
    files
}
