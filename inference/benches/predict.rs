//! Prediction alone, without HTTP: the reference tree walk
//! (`Model::predict`, the artifact's five arrays per tree, node by node)
//! against the serving layout (`serving::Predictor`), for one candidate
//! and for a batch of 100.
//!
//!     cargo bench -p ferry-inference --bench predict
//!
//! Prints the median and the fastest of 21 samples (each ~0.2 s), in ns
//! per prediction, and candidates per second for the batch.
//! `bench/inference/predict-instructions` counts instructions instead
//! (callgrind, repeatable on a shared machine), with `CASE --repeat N`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_inference::artifact;
use ferry_inference::data;
use ferry_inference::features::Candidate;
use ferry_inference::serving::{CompiledForest, Predictor};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/model/placement.json");
const TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/Test_Data.csv");
const SAMPLES: usize = 21;

/// ns per call of `f` (which handles `per_call` candidates): median and min.
fn measure(mut f: impl FnMut() -> f64, per_call: usize) -> (f64, f64) {
    // Calibrate to about 0.2 s a sample.
    let mut calls = 1usize;
    loop {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(f());
        }
        if start.elapsed() > Duration::from_millis(50) {
            break;
        }
        calls *= 2;
    }
    calls *= 4;
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / (calls * per_call) as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[SAMPLES / 2], samples[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `CASE --repeat N`: run one case N times and print nothing else, for
    // instruction counts (`bench/inference/predict-instructions`).
    let repeat = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok());
    let model = Arc::new(
        artifact::load(MODEL.as_ref())
            .expect("the committed model")
            .model,
    );
    let predictor = Predictor::new(model.clone());
    let candidates: Vec<Candidate> =
        data::unlabelled(&model.schema, &std::fs::read(TEST).expect("the test data"))
            .expect("the test data parses");
    let batch: Vec<Candidate> = candidates.iter().take(100).cloned().collect();
    let mut next = 0usize;
    let mut one = |predict: &dyn Fn(&Candidate) -> f64| {
        next = (next + 1) % candidates.len();
        predict(black_box(&candidates[next]))
    };
    let reference = |c: &Candidate| model.predict(c);
    let serving = |c: &Candidate| predictor.predict(c);
    let batch_of = |predict: &dyn Fn(&Candidate) -> f64| batch.iter().map(predict).sum::<f64>();
    if let Some(times) = repeat {
        let which = args.get(1).cloned().unwrap_or_default();
        let mut total = 0.0;
        for _ in 0..times {
            total += match which.as_str() {
                "reference" => one(&reference),
                "serving" => one(&serving),
                "reference-batch" => batch_of(&reference),
                "serving-batch" => batch_of(&serving),
                _ => {
                    eprintln!(
                        "usage: predict reference|serving|reference-batch|serving-batch --repeat N"
                    );
                    std::process::exit(2);
                }
            };
        }
        println!("{total}");
        return;
    }
    println!(
        "{} trees, {} candidates of Test_Data.csv in turn",
        model.forest.trees.len(),
        candidates.len()
    );
    let (r_med, r_min) = measure(|| one(&reference), 1);
    let (s_med, s_min) = measure(|| one(&serving), 1);
    println!("one candidate   reference walk   {r_med:8.0} ns (min {r_min:.0})");
    println!(
        "one candidate   serving layout   {s_med:8.0} ns (min {s_min:.0})   {:.1}x",
        r_med / s_med
    );
    // A server predicts between the kernel's and the HTTP layer's work,
    // which push the forest's tables out of the core's caches: the same,
    // after reading 4 MiB of something else (its own cost subtracted).
    let mut other = vec![1u64; 4 << 17];
    let mut evict = || {
        let mut x = 0u64;
        for v in other.iter_mut().step_by(8) {
            *v = v.wrapping_add(1);
            x ^= *v;
        }
        x as f64
    };
    let (e_med, _) = measure(&mut evict, 1);
    let (ce_med, _) = measure(
        || {
            let x = evict();
            x + one(&serving)
        },
        1,
    );
    println!(
        "one candidate   serving layout   {:8.0} ns with caches cold (after 4 MiB of other work)",
        ce_med - e_med
    );
    let (c_med, c_min) = measure(
        || {
            CompiledForest::compile(&model.forest)
                .map(|c| c.columns() as f64)
                .unwrap_or(0.0)
        },
        1,
    );
    println!(
        "compiling the serving layout at load: {:.2} ms (min {:.2})",
        c_med / 1e6,
        c_min / 1e6
    );
    let (rb_med, _) = measure(|| batch_of(&reference), 100);
    let (sb_med, _) = measure(|| batch_of(&serving), 100);
    println!(
        "batch of 100    reference walk   {:8.0} candidates/s",
        1e9 / rb_med
    );
    println!(
        "batch of 100    serving layout   {:8.0} candidates/s   {:.1}x",
        1e9 / sb_med,
        rb_med / sb_med
    );
}
