//! Replays every input of the fuzz corpora (`fuzz/corpus/<target>/`, seeded from the project's
//! fixtures) and of the crash regressions (`fuzz/regressions/<target>/`, every input a fuzzer
//! ever crashed on) through the fuzz targets' own bodies, on stable, on every `cargo test`: a
//! parser crash that was fixed cannot come back unnoticed. The fuzzing itself needs nightly and
//! cargo-fuzz; see `fuzz/README.md`.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist (a target without regressions).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Feeds every corpus and regression file of `target` to its entry point and fails with the
/// names of the inputs that panicked. An empty corpus fails too: the replay must test something.
fn replay(target: &str) {
    let run = targets::entry(target).unwrap();
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty or missing");
    let files = corpus
        .into_iter()
        .chain(inputs(&fuzz_dir().join("regressions").join(target)));
    let failed: Vec<String> = files
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: these inputs panic: {failed:#?}");
}

#[test]
fn sip_message_corpus_and_regressions_pass() {
    replay("sip_message");
}

#[test]
fn multipart_corpus_and_regressions_pass() {
    replay("multipart");
}

#[test]
fn sdp_corpus_and_regressions_pass() {
    replay("sdp");
}

#[test]
fn metadata_corpus_and_regressions_pass() {
    replay("metadata");
}

#[test]
fn offer_corpus_and_regressions_pass() {
    replay("offer");
}

#[test]
fn rtp_corpus_and_regressions_pass() {
    replay("rtp");
}

/// Every target has a test above and a corpus directory, and nothing else sits in `fuzz/corpus/`
/// or `fuzz/regressions/` (a directory named after no target would never be replayed).
#[test]
fn every_corpus_directory_names_a_target() {
    for sub in ["corpus", "regressions"] {
        for dir in inputs_dirs(&fuzz_dir().join(sub)) {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                targets::TARGETS.contains(&name.as_str()),
                "fuzz/{sub}/{name} names no fuzz target"
            );
        }
    }
    for target in targets::TARGETS {
        assert!(
            fuzz_dir().join("corpus").join(target).is_dir(),
            "no corpus for {target}"
        );
    }
}

fn inputs_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |es| es.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect(),
    )
}
