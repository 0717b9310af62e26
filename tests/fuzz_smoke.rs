//! A short, stable run of every fuzz target (`fuzz/`, run at length with
//! `cargo +nightly fuzz run`): each target gets its seed corpus, every
//! crash the fuzzers ever found (`fuzz/regressions/<target>/`), and a few
//! hundred deterministic mutations of the seeds (bit flips, truncations,
//! splices, byte insertions). A panic fails the test with the input's
//! origin named.

use stepwise::fuzz_targets::TARGETS;
use stepwise_test_support::repo_root;

/// A small deterministic generator (xorshift64*): the same mutations every run.
struct Mutations(u64);

impl Mutations {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A mutation of `seed`, sometimes spliced with `other`.
    fn mutate(&mut self, seed: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(5) {
                0 if !data.is_empty() => {
                    let at = self.below(data.len());
                    data[at] ^= 1 << self.below(8);
                }
                1 => data.truncate(self.below(data.len() + 1)),
                2 => {
                    let at = self.below(data.len() + 1);
                    let byte = [b'{', b'[', b'"', b'$', b'.', b'\n', b'=', 0, 0xff][self.below(9)];
                    data.insert(at, byte);
                }
                3 if !other.is_empty() => {
                    let (at, from) = (self.below(data.len() + 1), self.below(other.len()));
                    data.splice(at..at, other[from..].iter().take(64).copied());
                }
                _ => {
                    let at = self.below(data.len() + 1);
                    let repeated = data[..at].to_vec();
                    data.extend_from_slice(&repeated[..repeated.len().min(256)]);
                }
            }
        }
        data
    }
}

fn files_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_survives_its_corpus_its_regressions_and_their_mutations() {
    let fuzz = repo_root().join("fuzz");
    for (target, run) in TARGETS {
        let seeds = files_in(&fuzz.join("corpus").join(target));
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
        let regressions = files_in(&fuzz.join("regressions").join(target));
        let mutations = if target == "plugin_component" { 60 } else { 400 };
        let mut generator = Mutations(0x5eed ^ target.len() as u64);
        let mut inputs: Vec<(String, Vec<u8>)> = seeds.iter().chain(&regressions).cloned().collect();
        for round in 0..mutations {
            let (name, seed) = &seeds[round % seeds.len()];
            let other = &seeds[generator.below(seeds.len())].1;
            inputs.push((format!("mutation {round} of {name}"), generator.mutate(seed, other)));
        }
        for (origin, input) in &inputs {
            let outcome = std::panic::catch_unwind(|| run(input));
            assert!(outcome.is_ok(), "{target} panicked on {origin} ({} bytes)", input.len());
        }
        eprintln!("{target}: {} inputs ({} regressions)", inputs.len(), regressions.len());
    }
}
