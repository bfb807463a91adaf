//! LaMP's official metrics, computed as LaMP's evaluation code computes them, and the answer extraction we
//! apply before scoring.
//!
//! LaMP (`eval/evaluation.py`) strips each prediction and gold, then:
//! - LaMP-1/2: maps each string to its position in the task's label list, `-1` when it is not exactly one of
//!   the labels (so an out-of-list answer is wrong); accuracy is the share of positions that agree and F1 is
//!   scikit-learn's `f1_score(average="macro", labels=range(len(labels)))`: the mean over *every* label of the
//!   task of `2tp / (2tp + fp + fn)`, where a label no gold and no prediction uses scores 0 (scikit-learn's
//!   default `zero_division` sets ill-defined scores to 0) and still counts in the mean.
//! - LaMP-3: `float(pred)`; a prediction that does not parse scores the farther of 1 and 5 from the gold
//!   (`1.0 if abs(1 - gold) > abs(5 - gold) else 5.0`); MAE and RMSE over the questions. A number outside
//!   1-5 is used as it is, as LaMP does.
//! - LaMP-4..7: ROUGE-1 and ROUGE-L F-measure of Hugging Face `evaluate`'s `rouge` with its defaults, i.e.
//!   Google's `rouge_score` without stemming: lower-case, every run of characters outside `[a-z0-9]` is a
//!   separator, unigram overlap for ROUGE-1 and the longest common subsequence of the whole text for
//!   ROUGE-L (`rougeL`, not `rougeLsum`).
//!
//! Two places where we knowingly differ. `evaluate` aggregates ROUGE with a bootstrap (1000 unseeded
//! resamples) and reports the median of the resampled means; we report the plain mean of the per-question
//! F-measures, the quantity the bootstrap estimates (the two differ by resampling noise, typically well under
//! 0.001). And a rating prediction of `nan` or `inf`, which Python parses but scikit-learn then rejects
//! with an error, scores here as an unparsable one.
//!
//! LaMP scores the raw model output. Instruction-tuned models answer in sentences ("The tag is: comedy."),
//! so before scoring we pull the answer out with [`extract_answer`]. That is our pre-processing step, not
//! LaMP's, and it is applied the same way to every method compared.

use crate::eval::lamp::{Task, TaskKind, label_set};
use crate::rouge::{rouge_l_tokens, rouge_tokens, rouge1_tokens};

/// Why a set of predictions cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Predictions and golds are not paired one to one.
    #[error("{predictions} predictions for {golds} golds: they must pair up one to one")]
    LengthMismatch { predictions: usize, golds: usize },
    /// Nothing to score.
    #[error("no predictions to score")]
    Empty,
    /// A LaMP-3 gold is not a number.
    #[error("gold {index} (`{gold}`) is not a number; LaMP-3 golds are ratings 1-5")]
    GoldNotANumber { index: usize, gold: String },
}

/// Accuracy and macro-F1 of a classification task (LaMP-1, LaMP-2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassificationScores {
    /// Share of questions whose mapped prediction equals the mapped gold.
    pub accuracy: f64,
    /// Macro-F1 over all labels of the task.
    pub macro_f1: f64,
}

/// Errors of a rating task (LaMP-3); lower is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingScores {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
}

/// Mean ROUGE F-measures of a generation task (LaMP-4 to LaMP-7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScores {
    /// Mean ROUGE-1 F-measure.
    pub rouge1: f64,
    /// Mean ROUGE-L F-measure.
    pub rouge_l: f64,
}

/// The scores of one task, as its kind defines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskScores {
    /// LaMP-1, LaMP-2.
    Classification(ClassificationScores),
    /// LaMP-3.
    Rating(RatingScores),
    /// LaMP-4 to LaMP-7.
    Generation(RougeScores),
}

impl TaskScores {
    /// The metrics under the names LaMP's evaluation reports them: `accuracy`, `f1`; `MAE`, `RMSE`;
    /// `rouge-1`, `rouge-L`.
    pub fn named(&self) -> [(&'static str, f64); 2] {
        match *self {
            TaskScores::Classification(s) => [("accuracy", s.accuracy), ("f1", s.macro_f1)],
            TaskScores::Rating(s) => [("MAE", s.mae), ("RMSE", s.rmse)],
            TaskScores::Generation(s) => [("rouge-1", s.rouge1), ("rouge-L", s.rouge_l)],
        }
    }
}

/// Scores `predictions` against `golds` (paired by position) with the metrics of `task`.
///
/// # Errors
/// [`MetricError`] when the slices differ in length or are empty, or when a LaMP-3 gold is not a number.
pub fn score<P: AsRef<str>, G: AsRef<str>>(
    task: Task,
    predictions: &[P],
    golds: &[G],
) -> Result<TaskScores, MetricError> {
    match (task.kind(), label_set(task)) {
        (TaskKind::Classification, Some(labels)) => {
            classification(labels, predictions, golds).map(TaskScores::Classification)
        }
        (TaskKind::Rating, _) => rating(predictions, golds).map(TaskScores::Rating),
        _ => rouge(predictions, golds).map(TaskScores::Generation),
    }
}

/// Each question's part of the task's first metric (accuracy: 1 or 0; MAE: the absolute error, with
/// the worst-case rule; ROUGE-1: its F-measure), scored exactly as [`score`] scores it, so that their
/// mean is that metric. The second metrics (macro-F1, RMSE, ROUGE-L) are not means over questions.
///
/// # Errors
/// As [`score`]; a bad gold's index is its position in `golds`.
pub fn per_question<P: AsRef<str>, G: AsRef<str>>(
    task: Task,
    predictions: &[P],
    golds: &[G],
) -> Result<Vec<f64>, MetricError> {
    check_pairs(predictions, golds)?;
    predictions
        .iter()
        .zip(golds)
        .enumerate()
        .map(|(i, (p, g))| {
            score(task, &[p.as_ref()], &[g.as_ref()])
                .map(|s| s.named()[0].1)
                .map_err(|e| match e {
                    MetricError::GoldNotANumber { gold, .. } => {
                        MetricError::GoldNotANumber { index: i, gold }
                    }
                    e => e,
                })
        })
        .collect()
}

/// A paired difference of means with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PairedDelta {
    /// Mean of the differences.
    pub delta: f64,
    /// 2.5th percentile of the resampled means.
    pub low: f64,
    /// 97.5th percentile of the resampled means.
    pub high: f64,
}

/// The mean of `diffs` (one per question, method minus baseline) and its 95% percentile bootstrap
/// interval: `resamples` means of `diffs` drawn with replacement, seeded, so a report is reproducible.
/// `None` when `diffs` is empty or `resamples` is 0.
pub fn paired_bootstrap(diffs: &[f64], resamples: usize, seed: u64) -> Option<PairedDelta> {
    use rand::{RngExt, SeedableRng};
    if diffs.is_empty() || resamples == 0 {
        return None;
    }
    let n = diffs.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_unstable_by(f64::total_cmp);
    // the same order statistics as `sorted(means)[int(.025 R)]` and `[ceil(.975 R) - 1]`
    let low = means[resamples * 25 / 1000];
    let high = means[(resamples * 975).div_ceil(1000).max(1) - 1];
    Some(PairedDelta {
        delta: diffs.iter().sum::<f64>() / n as f64,
        low,
        high,
    })
}

fn check_pairs<P, G>(predictions: &[P], golds: &[G]) -> Result<usize, MetricError> {
    if predictions.len() != golds.len() {
        return Err(MetricError::LengthMismatch {
            predictions: predictions.len(),
            golds: golds.len(),
        });
    }
    if golds.is_empty() {
        return Err(MetricError::Empty);
    }
    Ok(golds.len())
}

/// Accuracy and macro-F1 over `labels`, as LaMP's `create_metric_f1_accuracy`: each stripped string maps to
/// its position in `labels` or to "none" (LaMP's `-1`); two "none"s agree for accuracy, as `-1 == -1` does in
/// scikit-learn, but "none" is no class for F1.
///
/// # Errors
/// [`MetricError`] when the slices differ in length or are empty.
pub fn classification<P: AsRef<str>, G: AsRef<str>>(
    labels: &[&str],
    predictions: &[P],
    golds: &[G],
) -> Result<ClassificationScores, MetricError> {
    let n = check_pairs(predictions, golds)?;
    let index = |s: &str| labels.iter().position(|l| *l == s.trim());
    let pairs: Vec<(Option<usize>, Option<usize>)> = predictions
        .iter()
        .zip(golds)
        .map(|(p, g)| (index(p.as_ref()), index(g.as_ref())))
        .collect();
    let correct = pairs.iter().filter(|(p, g)| p == g).count();
    let f1_sum: f64 = (0..labels.len())
        .map(|k| {
            let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
            for &(p, g) in &pairs {
                match (p == Some(k), g == Some(k)) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
            }
            let denominator = 2 * tp + fp + fn_;
            if denominator == 0 {
                0.0
            } else {
                (2 * tp) as f64 / denominator as f64
            }
        })
        .sum();
    let macro_f1 = if labels.is_empty() {
        0.0
    } else {
        f1_sum / labels.len() as f64
    };
    Ok(ClassificationScores {
        accuracy: correct as f64 / n as f64,
        macro_f1,
    })
}

/// MAE and RMSE of ratings, as LaMP's `create_metric_mae_rmse`: each stripped string is read as Python's
/// `float` reads it; a prediction that is not a finite number counts as the farther of 1 and 5 from its gold.
///
/// # Errors
/// [`MetricError`] when the slices differ in length or are empty, or when a gold is not a finite number.
pub fn rating<P: AsRef<str>, G: AsRef<str>>(
    predictions: &[P],
    golds: &[G],
) -> Result<RatingScores, MetricError> {
    let n = check_pairs(predictions, golds)?;
    let (mut abs_sum, mut sq_sum) = (0.0, 0.0);
    for (index, (p, g)) in predictions.iter().zip(golds).enumerate() {
        let g = g.as_ref();
        let gold = python_float(g).filter(|x| x.is_finite()).ok_or_else(|| {
            MetricError::GoldNotANumber {
                index,
                gold: g.to_owned(),
            }
        })?;
        let worst = if (1.0 - gold).abs() > (5.0 - gold).abs() {
            1.0
        } else {
            5.0
        };
        let pred = python_float(p.as_ref())
            .filter(|x| x.is_finite())
            .unwrap_or(worst);
        let err = pred - gold;
        abs_sum += err.abs();
        sq_sum += err * err;
    }
    Ok(RatingScores {
        mae: abs_sum / n as f64,
        rmse: (sq_sum / n as f64).sqrt(),
    })
}

/// Reads a number as Python's `float(s)` does: surrounding whitespace ignored; sign, digits, point,
/// exponent, `inf`/`infinity`/`nan` in any case; `_` allowed between two digits. (Python also takes
/// non-ASCII decimal digits, which this does not.)
fn python_float(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.contains('_') {
        let bytes = s.as_bytes();
        let ok = bytes.iter().enumerate().all(|(i, &b)| {
            b != b'_'
                || (i > 0
                    && bytes[i - 1].is_ascii_digit()
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        });
        return if ok {
            s.replace('_', "").parse().ok()
        } else {
            None
        };
    }
    s.parse().ok()
}

/// Mean ROUGE-1 and ROUGE-L F-measure of `predictions` against `golds` (one reference each).
///
/// # Errors
/// [`MetricError`] when the slices differ in length or are empty.
pub fn rouge<P: AsRef<str>, G: AsRef<str>>(
    predictions: &[P],
    golds: &[G],
) -> Result<RougeScores, MetricError> {
    let n = check_pairs(predictions, golds)? as f64;
    let (mut r1, mut rl) = (0.0, 0.0);
    for (p, g) in predictions.iter().zip(golds) {
        let (p, g) = (rouge_tokens(p.as_ref()), rouge_tokens(g.as_ref()));
        r1 += rouge1_tokens(&g, &p).fmeasure;
        rl += rouge_l_tokens(&g, &p).fmeasure;
    }
    Ok(RougeScores {
        rouge1: r1 / n,
        rouge_l: rl / n,
    })
}

use crate::answer::lone_digit;
/// Pulls the answer out of a model's free text, before scoring. Our step, not LaMP's (LaMP scores the raw
/// string); applied identically to every method compared.
///
/// - LaMP-1/2: the label of [`label_set`] that occurs first in the text, ignoring ASCII case; at one
///   position the longest label wins ("dark comedy" over "comedy"). A label must stand as a word: a label
///   that starts or ends with a letter or digit does not match inside a longer word ("action" is not found
///   in "reaction"). A space or hyphen inside a label matches any run of spaces, hyphens and underscores, so
///   "Sci Fi" and "thought provoking" are found. LaMP-1 also takes a lone digit `1` or `2` for `[1]`/`[2]`
///   when no bracketed label occurs.
/// - LaMP-3: the first digit 1-5 that is not part of a longer number ("4 out of 5" gives `4`; "10" gives
///   nothing; "4.5" gives `4`). A list number that opens the text ("1. ", "2) ") is skipped when a rating
///   follows it: small models copy the numbered history block, "1. 5 is the score" gives `5`.
/// - LaMP-4..7: the text with surrounding whitespace removed.
///
/// The answer comes back in the label list's spelling. When nothing is found the trimmed text comes back,
/// which LaMP then scores as out of the list (wrong) or, for ratings, as unparsable.
pub use crate::answer::{first_label, first_rating};

pub fn extract_answer(task: Task, raw_model_output: &str) -> String {
    let text = raw_model_output.trim();
    let found = match (task, label_set(task)) {
        (Task::LaMP3, _) => first_rating(text),
        (Task::LaMP1, Some(labels)) => first_label(text, labels).or_else(|| {
            lone_digit(text, b'1'..=b'2').map(|d| if d == "1" { "[1]" } else { "[2]" })
        }),
        (_, Some(labels)) => first_label(text, labels),
        (_, None) => None,
    };
    found.unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < EPS
    }

    const ABC: &[&str] = &["a", "b", "c", "d"];

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        // gold a a b c, pred a b b <junk>; label d is in neither
        // a: tp 1 fp 0 fn 1 -> 2/3; b: tp 1 fp 1 fn 0 -> 2/3; c: tp 0 fn 1 -> 0; d: nothing -> 0
        // macro = (2/3 + 2/3 + 0 + 0) / 4 = 1/3, accuracy 2/4
        let s = classification(ABC, &["a", "b", "b", "zzz"], &["a", "a", "b", "c"]).unwrap();
        assert!(close(s.accuracy, 0.5), "{s:?}");
        assert!(close(s.macro_f1, 1.0 / 3.0), "{s:?}");
    }

    #[test]
    fn out_of_list_answers_are_wrong_but_two_unknowns_agree_as_in_sklearn() {
        // the same case scikit-learn 1.9 gives accuracy 0.6 and macro-F1 1/3 for:
        // f1_score([0,0,1,2,-1], [0,1,1,-1,-1], labels=range(4), average="macro")
        let s = classification(
            ABC,
            &["a", "b", "b", "nope", "what"],
            &["a", "a", "b", "c", "??"],
        )
        .unwrap();
        assert!(close(s.accuracy, 0.6), "{s:?}");
        assert!(close(s.macro_f1, 1.0 / 3.0), "{s:?}");
    }

    #[test]
    fn all_wrong_and_empty_predictions_score_zero() {
        let s = classification(ABC, &["b", "a", "", "  "], &["a", "b", "c", "d"]).unwrap();
        assert_eq!((s.accuracy, s.macro_f1), (0.0, 0.0));
    }

    #[test]
    fn all_right_on_a_subset_of_labels_is_not_full_f1() {
        // only a and b occur: their F1 is 1, c and d count as 0 in the macro mean
        let s = classification(ABC, &["a", "b"], &["a", "b"]).unwrap();
        assert!(close(s.accuracy, 1.0));
        assert!(close(s.macro_f1, 0.5), "{s:?}");
    }

    #[test]
    fn classification_strips_but_is_case_sensitive_like_lamp() {
        let s = classification(ABC, &[" a\n", "B"], &["a", "b"]).unwrap();
        assert!(close(s.accuracy, 0.5), "{s:?}");
        // a: tp 1 -> 1; b: fn 1 -> 0; c, d -> 0
        assert!(close(s.macro_f1, 0.25), "{s:?}");
    }

    #[test]
    fn pairs_must_match() {
        let err = classification(ABC, &["a"], &["a", "b"]).unwrap_err();
        assert_eq!(
            err,
            MetricError::LengthMismatch {
                predictions: 1,
                golds: 2
            }
        );
        let none: [&str; 0] = [];
        assert_eq!(rating(&none, &none).unwrap_err(), MetricError::Empty);
        assert_eq!(rouge(&none, &none).unwrap_err(), MetricError::Empty);
    }

    #[test]
    fn rating_errors_by_hand() {
        // errors: |4-5| = 1, |3-3| = 0, |1.5-2| = 0.5 -> MAE 0.5, RMSE sqrt(1.25/3)
        let s = rating(&["4", " 3 ", "1.5"], &["5", "3", "2"]).unwrap();
        assert!(close(s.mae, 0.5), "{s:?}");
        assert!(close(s.rmse, (1.25f64 / 3.0).sqrt()), "{s:?}");
    }

    #[test]
    fn unparsable_rating_scores_the_farther_end() {
        // gold 2: |1-2| = 1 < |5-2| = 3 -> counted as 5, error 3
        // gold 4: |1-4| = 3 > |5-4| = 1 -> counted as 1, error 3
        // gold 3: tie, LaMP picks 5 -> error 2
        for (gold, err) in [("2", 3.0), ("4", 3.0), ("3", 2.0), ("5", 4.0), ("1", 4.0)] {
            for pred in ["four", "", "4 stars", "nan", "inf", "1__0"] {
                let s = rating(&[pred], &[gold]).unwrap();
                assert!(
                    close(s.mae, err) && close(s.rmse, err),
                    "{pred:?} vs {gold}: {s:?}"
                );
            }
        }
        // numbers outside 1-5 count as they are, as float() reads them
        let s = rating(&["7", "1_0", "+2e0", "-1"], &["5", "5", "2", "1"]).unwrap();
        assert!(close(s.mae, (2.0 + 5.0 + 0.0 + 2.0) / 4.0), "{s:?}");
        assert!(close(s.rmse, ((4.0 + 25.0 + 4.0) / 4.0f64).sqrt()), "{s:?}");
    }

    #[test]
    fn rating_gold_must_be_a_number() {
        let err = rating(&["3", "3"], &["3", "five"]).unwrap_err();
        assert_eq!(
            err,
            MetricError::GoldNotANumber {
                index: 1,
                gold: "five".into()
            }
        );
    }

    #[test]
    fn python_float_reads_what_python_reads() {
        for (s, v) in [
            ("3", 3.0),
            (" 4.5\n", 4.5),
            ("+2", 2.0),
            ("-1", -1.0),
            (".5", 0.5),
            ("5.", 5.0),
        ] {
            assert_eq!(python_float(s), Some(v), "{s:?}");
        }
        assert_eq!(python_float("1e1"), Some(10.0));
        assert_eq!(python_float("1_000.5"), Some(1000.5));
        assert!(python_float("Infinity").is_some_and(f64::is_infinite));
        for bad in [
            "", "  ", "3/5", "4 stars", "_1", "1_", "1__0", "1_.5", "0x10", "three",
        ] {
            assert_eq!(python_float(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rouge_means_per_example_f_and_ignores_punctuation_and_case() {
        let s = rouge(
            &["THE CAT!!", "a dog", "d c b"],
            &["the cat", "the cat", "a b c d"],
        )
        .unwrap();
        assert!(close(s.rouge1, (1.0 + 0.0 + 6.0 / 7.0) / 3.0), "{s:?}");
        assert!(close(s.rouge_l, (1.0 + 0.0 + 2.0 / 7.0) / 3.0), "{s:?}");
    }

    #[test]
    fn score_dispatches_by_task_and_names_metrics_like_lamp() {
        let s = score(Task::LaMP2, &["comedy"], &["comedy"]).unwrap();
        let TaskScores::Classification(c) = s else {
            panic!("{s:?}")
        };
        // 1 of 15 labels right, the other 14 score 0
        assert!(close(c.macro_f1, 1.0 / 15.0));
        assert_eq!(s.named()[0], ("accuracy", 1.0));
        let s = score(Task::LaMP3, &["x"], &["3"]).unwrap();
        assert_eq!(s.named(), [("MAE", 2.0), ("RMSE", 2.0)]);
        let s = score(Task::LaMP7, &["hi there"], &["hi"]).unwrap();
        assert_eq!(s.named()[1].0, "rouge-L");
        assert!(close(s.named()[0].1, 2.0 / 3.0));
    }

    #[test]
    fn extracts_labels_first_occurrence_longest_first() {
        let x = |s| extract_answer(Task::LaMP2, s);
        assert_eq!(x("Dark Comedy."), "dark comedy");
        assert_eq!(x("The tag is: dark comedy, not comedy"), "dark comedy");
        assert_eq!(x("comedy, maybe dark comedy"), "comedy");
        assert_eq!(x("  SCI-FI  "), "sci-fi");
        assert_eq!(x("sci fi"), "sci-fi");
        assert_eq!(x("thought provoking"), "thought-provoking");
        assert_eq!(x("a true   story"), "true story");
        // labels stand as words: "reaction" holds no "action", "classical" no "classic"
        assert_eq!(
            x("an overreaction, quite classical"),
            "an overreaction, quite classical"
        );
        assert_eq!(x("I cannot say"), "I cannot say");
        assert_eq!(x(""), "");
    }

    #[test]
    fn extracts_citation_choice() {
        let x = |s| extract_answer(Task::LaMP1, s);
        assert_eq!(x("[2]"), "[2]");
        assert_eq!(x("Answer: [1] because [2] is older"), "[1]");
        assert_eq!(x("Reference 2"), "[2]");
        assert_eq!(x("reference 12"), "reference 12");
    }

    #[test]
    fn extracts_first_lone_rating_digit() {
        let x = |s| extract_answer(Task::LaMP3, s);
        assert_eq!(x("4"), "4");
        assert_eq!(x("I'd say 4 out of 5"), "4");
        assert_eq!(x("Score: 10/10, so 5"), "5");
        assert_eq!(x("4.5"), "4");
        assert_eq!(x("zero 0 or six 6"), "zero 0 or six 6");
        assert_eq!(x(" great "), "great");
        // a list number that opens the answer is not the rating when one follows it
        assert_eq!(x("1. 5 is the score for"), "5");
        assert_eq!(x("2) I'd give it 4"), "4");
        assert_eq!(x("1. 1\n2."), "1");
        assert_eq!(x("4. Great album"), "4");
        assert_eq!(x("4.5 stars"), "4");
        assert_eq!(x("3 stars. 5 songs"), "3");
    }

    #[test]
    fn generation_answers_are_only_trimmed() {
        assert_eq!(
            extract_answer(Task::LaMP7, "  @united thanks 4 nothing \n"),
            "@united thanks 4 nothing"
        );
        assert_eq!(extract_answer(Task::LaMP4, "comedy"), "comedy");
    }

    #[test]
    fn extraction_then_scoring_end_to_end() {
        let raw = [
            "The tag is \"dark comedy\".",
            "Probably violence",
            "no idea",
        ];
        let preds: Vec<String> = raw.iter().map(|r| extract_answer(Task::LaMP2, r)).collect();
        let s = score(Task::LaMP2, &preds, &["dark comedy", "action", "action"]).unwrap();
        let TaskScores::Classification(c) = s else {
            panic!("{s:?}")
        };
        assert!(close(c.accuracy, 1.0 / 3.0));
        // dark comedy: F1 1; action: tp 0 fn 2 -> 0; violence: fp 1 -> 0; others 0
        assert!(close(c.macro_f1, 1.0 / 15.0));
    }
    #[test]
    fn per_question_scores_average_to_the_first_metric() {
        let labels_task: Task = "LaMP_2".parse().unwrap();
        let (p, g) = (
            ["comedy", "action", "junk"],
            ["comedy", "comedy", "classic"],
        );
        assert_eq!(per_question(labels_task, &p, &g).unwrap(), [1.0, 0.0, 0.0]);
        let rating: Task = "LaMP_3".parse().unwrap();
        // |4-5|, |2-1|, unparsable against gold 2 scores the farther end, 5: 3
        let errs = per_question(rating, &["4", "2", "x"], &["5", "1", "2"]).unwrap();
        assert_eq!(errs, [1.0, 1.0, 3.0]);
        let whole = score(rating, &["4", "2", "x"], &["5", "1", "2"])
            .unwrap()
            .named()[0]
            .1;
        assert!(close(errs.iter().sum::<f64>() / 3.0, whole));
        let text: Task = "LaMP_7".parse().unwrap();
        let (p, g) = (["the cat sat", "a dog"], ["the cat", "the dog ran"]);
        let each = per_question(text, &p, &g).unwrap();
        assert!(close(each[0], 0.8) && close(each[1], 0.4), "{each:?}");
        let whole = score(text, &p, &g).unwrap().named()[0].1;
        assert!(close((each[0] + each[1]) / 2.0, whole));
        // a bad gold is named by its own index
        assert_eq!(
            per_question(rating, &["1", "2"], &["3", "x"]),
            Err(MetricError::GoldNotANumber {
                index: 1,
                gold: "x".into()
            })
        );
        assert_eq!(
            per_question(rating, &["1"], &["3", "4"]),
            Err(MetricError::LengthMismatch {
                predictions: 1,
                golds: 2
            })
        );
    }

    #[test]
    fn paired_bootstrap_by_hand() {
        assert_eq!(paired_bootstrap(&[], 100, 0), None);
        assert_eq!(paired_bootstrap(&[1.0], 0, 0), None);
        // no difference: a point interval at 0; a constant one: a point interval at it
        let zero = paired_bootstrap(&[0.0; 7], 2000, 0).unwrap();
        assert_eq!((zero.delta, zero.low, zero.high), (0.0, 0.0, 0.0));
        let c = paired_bootstrap(&[-0.5; 4], 2000, 0).unwrap();
        assert_eq!((c.delta, c.low, c.high), (-0.5, -0.5, -0.5));
        // two questions, one gained: resampled means are 0, .5, 1 with chances 1/4, 1/2, 1/4, so the
        // 2.5th and 97.5th percentiles of 2000 are 0 and 1
        let two = paired_bootstrap(&[1.0, 0.0], 2000, 0).unwrap();
        assert_eq!((two.delta, two.low, two.high), (0.5, 0.0, 1.0));
        // one gain in 40 questions: the interval holds the mean, starts at 0 (no draw loses) and is
        // reproducible for a seed
        let mut diffs = vec![0.0; 40];
        diffs[3] = 1.0;
        let a = paired_bootstrap(&diffs, 2000, 7).unwrap();
        assert!(close(a.delta, 0.025));
        assert!(a.low == 0.0 && a.high > a.delta && a.high < 0.2, "{a:?}");
        assert_eq!(paired_bootstrap(&diffs, 2000, 7), Some(a));
    }
}
