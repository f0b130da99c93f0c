//! The committed model: it is exactly what its data and parameters give,
//! and it meets the quality bar.

use ferry_inference::{artifact, data, train};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/model/placement.json");
const TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/Train_Data.csv");
const TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/Test_Data.csv");

/// The same data and parameters give a byte-identical artifact, so CI can
/// tell a committed model that no longer matches its data (retrain with
/// `ferry-inference train --data inference/data/Train_Data.csv --out inference/model/placement.json`).
#[test]
fn committed_model_is_reproducible_from_its_data() {
    let committed_bytes = std::fs::read(MODEL).unwrap();
    let committed = artifact::load(MODEL.as_ref()).unwrap();
    let csv = std::fs::read(TRAIN).unwrap();
    let retrained = train::train(&csv, &committed.model.parameters, &mut |_| {}).unwrap();
    assert_eq!(
        retrained.sha256, committed.sha256,
        "the committed model does not match inference/data; retrain it"
    );
    assert!(
        retrained.to_bytes() == committed_bytes,
        "same digest but different bytes: the file was reformatted"
    );
}

#[test]
fn committed_model_meets_the_quality_bar_on_both_protocols() {
    let m = artifact::load(MODEL.as_ref()).unwrap().model;
    for report in [&m.metrics.cv_unshuffled, &m.metrics.cv_stratified] {
        assert!(
            report.mean_accuracy >= 0.95,
            "{}: {}",
            report.protocol,
            report.mean_accuracy
        );
        assert_eq!(report.fold_accuracy.len(), train::FOLDS);
        assert!(
            report.pooled.roc_auc >= 0.95,
            "{}: {:?}",
            report.protocol,
            report.pooled
        );
    }
    assert_eq!(
        m.training_data.sha256,
        "d5ac203100bc5a786a67eb5039f20eb2fa38d557f4b31e8cc49c1facff6336a8"
    );
    assert_eq!(
        (m.training_data.rows, m.training_data.positives),
        (670, 439)
    );
}

#[test]
fn scores_every_row_of_the_unlabelled_test_file() {
    let model = artifact::load(MODEL.as_ref()).unwrap().model;
    let candidates = data::unlabelled(&model.schema, &std::fs::read(TEST).unwrap()).unwrap();
    assert_eq!(candidates.len(), 448);
    let placed = candidates
        .iter()
        .filter(|c| model.predict(c) >= 0.5)
        .count();
    // The test file is drawn from the same population (about two thirds placed).
    assert!((150..=400).contains(&placed), "{placed} of 448 placed");
}

/// The serving layout gives the reference walk's probability, bit for
/// bit, for every row of both data files.
#[test]
fn the_serving_layout_answers_exactly_as_the_trees() {
    let model = std::sync::Arc::new(artifact::load(MODEL.as_ref()).unwrap().model);
    let predictor = ferry_inference::serving::Predictor::new(model.clone());
    assert!(predictor.is_compiled());
    let train = data::training_data(&std::fs::read(TRAIN).unwrap()).unwrap();
    let test = data::unlabelled(&model.schema, &std::fs::read(TEST).unwrap()).unwrap();
    let rows = train.candidates.iter().chain(&test);
    let mut checked = 0;
    for (i, candidate) in rows.enumerate() {
        let reference = model.forest.probability(&model.schema.encode(candidate));
        assert_eq!(
            predictor.predict(candidate).to_bits(),
            reference.to_bits(),
            "row {i}"
        );
        assert_eq!(model.predict(candidate).to_bits(), reference.to_bits());
        checked += 1;
    }
    assert_eq!(checked, 670 + 448);
}
