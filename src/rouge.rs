//! ROUGE as Google's `rouge_score` computes it without stemming (what LaMP's evaluation uses through
//! Hugging Face `evaluate`): the F-measure of one free-text answer against the real one. Shared by the
//! policy's held-out scores and `eval`'s metrics, which both sit above it.

/// Precision, recall and F-measure of one ROUGE comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScore {
    /// Matched tokens over prediction tokens.
    pub precision: f64,
    /// Matched tokens over reference tokens.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub fmeasure: f64,
}

/// The tokens `rouge_score`'s default tokenizer makes (no stemming): the text lower-cased, every run of
/// characters other than `a-z` and `0-9` a separator.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// ROUGE-1 of `prediction` against `reference`: clipped unigram overlap.
pub fn rouge1(reference: &str, prediction: &str) -> RougeScore {
    rouge1_tokens(&rouge_tokens(reference), &rouge_tokens(prediction))
}

/// ROUGE-L of `prediction` against `reference`: longest common subsequence of the token sequences.
pub fn rouge_l(reference: &str, prediction: &str) -> RougeScore {
    rouge_l_tokens(&rouge_tokens(reference), &rouge_tokens(prediction))
}

fn prf(matched: usize, reference_len: usize, prediction_len: usize) -> RougeScore {
    let precision = matched as f64 / prediction_len.max(1) as f64;
    let recall = matched as f64 / reference_len.max(1) as f64;
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

pub(crate) fn rouge1_tokens(reference: &[String], prediction: &[String]) -> RougeScore {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for t in reference {
        *counts.entry(t).or_default() += 1;
    }
    let mut matched = 0;
    for t in prediction {
        if let Some(c) = counts.get_mut(t.as_str())
            && *c > 0
        {
            *c -= 1;
            matched += 1;
        }
    }
    prf(matched, reference.len(), prediction.len())
}

pub(crate) fn rouge_l_tokens(reference: &[String], prediction: &[String]) -> RougeScore {
    if reference.is_empty() || prediction.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    // one row of the LCS table at a time
    let mut prev = vec![0usize; prediction.len() + 1];
    let mut row = vec![0usize; prediction.len() + 1];
    for r in reference {
        for (j, p) in prediction.iter().enumerate() {
            row[j + 1] = if r == p {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prf(prev[prediction.len()], reference.len(), prediction.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rouge_tokenizer_lowercases_and_splits_on_non_alphanumerics() {
        assert_eq!(
            rouge_tokens("Hello, World! It's 2024."),
            ["hello", "world", "it", "s", "2024"]
        );
        assert_eq!(rouge_tokens("@United #fail—ugh"), ["united", "fail", "ugh"]);
        // non-ASCII letters are separators, as in rouge_score
        assert_eq!(rouge_tokens("Café crème"), ["caf", "cr", "me"]);
        assert!(rouge_tokens("  ...  ").is_empty());
    }

    #[test]
    fn rouge_identical_disjoint_and_empty() {
        let same = rouge1("The cat sat.", "the CAT sat");
        assert_eq!(
            (same.precision, same.recall, same.fmeasure),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(rouge_l("The cat sat.", "the CAT sat").fmeasure, 1.0);
        let disjoint = rouge1("the cat", "a dog");
        assert_eq!(
            (disjoint.precision, disjoint.recall, disjoint.fmeasure),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(rouge_l("the cat", "a dog").fmeasure, 0.0);
        for (r, p) in [("the cat", ""), ("", "the cat"), ("", "")] {
            assert_eq!(rouge1(r, p).fmeasure, 0.0);
            assert_eq!(rouge_l(r, p).fmeasure, 0.0);
        }
    }

    #[test]
    fn rouge_partial_overlap_by_hand() {
        // reference: the cat sat on the mat (6 tokens), prediction: the cat lay on a mat (6 tokens)
        // ROUGE-1 clipped overlap: the(1) cat on mat = 4 -> P = R = F = 4/6
        let r1 = rouge1("the cat sat on the mat", "the cat lay on a mat");
        assert!(
            close(r1.precision, 4.0 / 6.0)
                && close(r1.recall, 4.0 / 6.0)
                && close(r1.fmeasure, 4.0 / 6.0)
        );
        // LCS: the cat on mat = 4, same P/R/F
        let rl = rouge_l("the cat sat on the mat", "the cat lay on a mat");
        assert!(close(rl.fmeasure, 4.0 / 6.0), "{rl:?}");

        // reference: a b c d (4), prediction: d c b (3)
        // ROUGE-1: 3 matches -> P 1, R 3/4, F = 2*0.75/1.75 = 6/7
        let r1 = rouge1("a b c d", "d c b");
        assert!(
            close(r1.precision, 1.0) && close(r1.recall, 0.75) && close(r1.fmeasure, 6.0 / 7.0),
            "{r1:?}"
        );
        // LCS of (a b c d, d c b) = 1 -> P 1/3, R 1/4, F = 2/12 / (7/12) = 2/7
        let rl = rouge_l("a b c d", "d c b");
        assert!(
            close(rl.precision, 1.0 / 3.0)
                && close(rl.recall, 0.25)
                && close(rl.fmeasure, 2.0 / 7.0)
        );

        // repeated prediction tokens are clipped by the reference count:
        // reference "the cat" (2), prediction "the the the" (3): overlap 1 -> P 1/3, R 1/2, F 0.4
        let r1 = rouge1("the cat", "the the the");
        assert!(close(r1.fmeasure, 0.4), "{r1:?}");
    }
}
