//! Collects the e2e tests (see `common/collect.rs`) into `$OUT_DIR/e2e_tests.rs`, the list that
//! `main.rs` includes, and `$OUT_DIR/e2e_names.rs`, their names for the library's unit tests.

#[path = "common/collect.rs"]
mod collect;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=main.rs");
    let main_rs = std::fs::read_to_string(dir.join("main.rs")).expect("reading tests/main.rs");
    for m in collect::declared_modules(&main_rs) {
        println!("cargo:rerun-if-changed={m}.rs");
    }
    let found = collect::collect(&dir).unwrap_or_else(|e| panic!("{e}"));
    for w in &found.warnings {
        println!("cargo:warning={w}");
    }
    let mut tests = String::from("vec![\n");
    let mut names = String::from("&[\n");
    for t in &found.tests {
        tests.push_str(&format!(
            "    ({t:?}, (|env| Box::pin({t}(env))) as stateful_tests::TestFn),\n"
        ));
        names.push_str(&format!("    {t:?},\n"));
    }
    tests.push(']');
    names.push(']');
    write(&out.join("e2e_tests.rs"), &tests);
    write(&out.join("e2e_names.rs"), &names);
}

/// Writes `text` unless the file already holds it (so an unchanged list does not look new).
fn write(path: &std::path::Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
