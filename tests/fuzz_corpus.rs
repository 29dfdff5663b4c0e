//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! bodies, so that `cargo test` keeps every input the fuzzer once found interesting (crashes
//! included) answering without a panic, with no fuzzer and no nightly toolchain. The bodies are
//! `fuzz/src/lib.rs`, compiled here as a module: the targets and this test cannot drift apart.
//! `bench/fuzz.sh` runs the fuzzer itself.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

/// Fewest inputs a target's corpus may hold: a missing or emptied directory fails the test
/// instead of passing with nothing replayed.
const MIN_INPUTS: usize = 10;

fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) => panic!("{}: {error}", dir.display()),
    };
    let mut count = 0;
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(error) => panic!("{}: {error}", dir.display()),
        };
        if !path.is_file() {
            continue;
        }
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(error) => panic!("{}: {error}", path.display()),
        };
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(
            outcome.is_ok(),
            "{name}: {} panicked ({} bytes: {:?})",
            path.display(),
            data.len(),
            String::from_utf8_lossy(&data)
        );
        count += 1;
    }
    assert!(
        count >= MIN_INPUTS,
        "{}: {count} inputs, expected at least {MIN_INPUTS}",
        dir.display()
    );
    count
}

macro_rules! corpus_tests {
    ($($name:ident)+) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), harness::$name);
            }
        )+

        /// Every target of the harness has its test above (a new target cannot go unreplayed).
        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($name)),+];
            for (name, _) in harness::TARGETS {
                assert!(tested.contains(&name), "fuzz target {name} is not replayed");
            }
        }
    };
}

corpus_tests!(filter order_by cursor events_ndjson events_csv records_params);
