//! Okapi BM25 over short texts, as LaMP's retrieval computes it (`rank_bm25.BM25Okapi`): the history
//! items nearest a request, for the policy's retrieval way ([`crate::personalize::policy`]) and LaMP's
//! retrieval prompts ([`crate::eval::prompts`]).

use std::collections::HashMap;

/// Splits text into BM25 terms as LaMP does: on whitespace only, case kept.
pub fn bm25_tokens(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// An Okapi BM25 index over a tokenised corpus, computed exactly as `rank_bm25.BM25Okapi`.
///
/// `idf(t) = ln(N - df + 0.5) - ln(df + 0.5)`; a term whose idf is negative (in more than half the
/// documents) gets `epsilon * mean idf` instead, the mean taken over all terms before that floor.
#[derive(Debug, Clone)]
pub struct Bm25 {
    doc_freqs: Vec<HashMap<String, usize>>,
    doc_len: Vec<usize>,
    avgdl: f64,
    idf: HashMap<String, f64>,
}

impl Bm25 {
    /// Term-frequency saturation.
    pub const K1: f64 = 1.5;
    /// Length normalisation.
    pub const B: f64 = 0.75;
    /// Floor for negative idf, as a share of the mean idf.
    pub const EPSILON: f64 = 0.25;

    /// Indexes `corpus`, one token list per document.
    pub fn new<T: AsRef<str>>(corpus: &[Vec<T>]) -> Bm25 {
        let mut doc_freqs = Vec::with_capacity(corpus.len());
        let mut doc_len = Vec::with_capacity(corpus.len());
        // document frequency per term, in order of first appearance (the order rank_bm25 sums idf in)
        let mut df: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for doc in corpus {
            doc_len.push(doc.len());
            let mut freqs: HashMap<String, usize> = HashMap::new();
            for t in doc {
                *freqs.entry(t.as_ref().to_owned()).or_default() += 1;
            }
            let mut first_seen: Vec<&str> = Vec::new();
            let mut noted = std::collections::HashSet::new();
            for t in doc {
                if noted.insert(t.as_ref()) {
                    first_seen.push(t.as_ref());
                }
            }
            for t in first_seen {
                let count = df.entry(t.to_owned()).or_insert_with(|| {
                    order.push(t.to_owned());
                    0
                });
                *count += 1;
            }
            doc_freqs.push(freqs);
        }
        let n = corpus.len() as f64;
        let total: usize = doc_len.iter().sum();
        let avgdl = if corpus.is_empty() {
            0.0
        } else {
            total as f64 / n
        };

        let mut idf = HashMap::with_capacity(order.len());
        let mut idf_sum = 0.0;
        let mut negative = Vec::new();
        for term in order {
            let freq = df[&term] as f64;
            let value = (n - freq + 0.5).ln() - (freq + 0.5).ln();
            idf_sum += value;
            if value < 0.0 {
                negative.push(term.clone());
            }
            idf.insert(term, value);
        }
        if !idf.is_empty() {
            let eps = Self::EPSILON * (idf_sum / idf.len() as f64);
            for term in negative {
                idf.insert(term, eps);
            }
        }
        Bm25 {
            doc_freqs,
            doc_len,
            avgdl,
            idf,
        }
    }

    /// The number of documents.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// Whether the corpus has no documents.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// The score of every document for `query`; a term repeated in the query counts each time, as in
    /// `rank_bm25`. All zeros when every document is empty.
    pub fn scores<T: AsRef<str>>(&self, query: &[T]) -> Vec<f64> {
        let mut scores = vec![0.0; self.len()];
        if self.avgdl == 0.0 {
            return scores;
        }
        let (k1, b) = (Self::K1, Self::B);
        for q in query {
            let Some(&idf) = self.idf.get(q.as_ref()) else {
                continue;
            };
            for (d, score) in scores.iter_mut().enumerate() {
                let f = self.doc_freqs[d].get(q.as_ref()).copied().unwrap_or(0) as f64;
                let dl = self.doc_len[d] as f64;
                *score += idf * (f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * dl / self.avgdl)));
            }
        }
        scores
    }

    /// The indices of the `n` best documents for `query`, best first; ties go to the later document.
    pub fn top_n<T: AsRef<str>>(&self, query: &[T], n: usize) -> Vec<usize> {
        let scores = self.scores(query);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]).then(y.cmp(&x)));
        order.truncate(n);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: [&str; 6] = [
        "the cat sat on the mat",
        "dogs chase the cat",
        "a bird sings",
        "The mat is red",
        "the dog and the cat sleep",
        "the end",
    ];

    fn index() -> Bm25 {
        let corpus: Vec<Vec<&str>> = DOCS.iter().map(|d| bm25_tokens(d)).collect();
        Bm25::new(&corpus)
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn bm25_idf_by_hand() {
        let bm = index();
        let ln = f64::ln;
        // "mat" is in 2 of 6 documents: ln(4.5) - ln(2.5)
        assert!((bm.idf["mat"] - (ln(4.5) - ln(2.5))).abs() < 1e-12);
        // "cat" is in 3 of 6: ln(3.5) - ln(3.5) = 0, kept as 0 (not negative)
        assert_eq!(bm.idf["cat"], 0.0);
        // "the" is in 4 of 6: negative, floored to 0.25 * the mean idf of all 17 terms before flooring:
        // 14 terms in one document (sat on dogs chase a bird sings The is red dog and sleep end),
        // mat in 2, cat in 3, the in 4; rank_bm25 gives 0.2674994379091714
        assert!(
            (bm.idf["the"] - 0.2674994379091714).abs() < 1e-12,
            "{}",
            bm.idf["the"]
        );
        let one = ln(5.5) - ln(1.5);
        let two = ln(4.5) - ln(2.5);
        let four = ln(2.5) - ln(4.5);
        let mean = (14.0 * one + two + 0.0 + four) / 17.0;
        assert!((bm.idf["the"] - 0.25 * mean).abs() < 1e-12);
        assert!((bm.avgdl - 25.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn bm25_scores_match_rank_bm25() {
        let bm = index();
        // scores as rank_bm25 0.2.2 prints them (BM25Okapi over the same split() tokens); the orders are
        // ours (ties to the later document), which numpy 2.4 on x86 matches except among tied zeros
        let cases: [(&str, [f64; 6], [usize; 6]); 5] = [
            (
                "the mat",
                [
                    0.8254327423803758,
                    0.27240268626188535,
                    0.0,
                    0.5985607585561293,
                    0.33479278837192916,
                    0.34921597638273033,
                ],
                [0, 3, 5, 4, 1, 2],
            ),
            (
                "the cat",
                [
                    0.33479278837192916,
                    0.27240268626188535,
                    0.0,
                    0.0,
                    0.33479278837192916,
                    0.34921597638273033,
                ],
                [5, 4, 0, 1, 3, 2],
            ),
            (
                "mat mat",
                [0.9812799080168934, 0.0, 0.0, 1.1971215171122587, 0.0, 0.0],
                [3, 0, 5, 4, 2, 1],
            ),
            ("zebra", [0.0; 6], [5, 4, 3, 2, 1, 0]),
            (
                "The bird",
                [0.0, 0.0, 1.4865938033527017, 1.3230987618434429, 0.0, 0.0],
                [2, 3, 5, 4, 1, 0],
            ),
        ];
        for (query, scores, order) in cases {
            let q = bm25_tokens(query);
            assert!(
                close(&bm.scores(&q), &scores),
                "{query}: {:?}",
                bm.scores(&q)
            );
            assert_eq!(bm.top_n(&q, 6), order, "{query}");
            assert_eq!(bm.top_n(&q, 2), order[..2], "{query}");
        }
        // "bird" by hand: idf ln(5.5/1.5); doc 2 has 3 tokens, f = 1
        let s = bm.scores(&["bird"])[2];
        let idf = (5.5f64 / 1.5).ln();
        let want = idf * (2.5 / (1.0 + 1.5 * (0.25 + 0.75 * 3.0 / (25.0 / 6.0))));
        assert!((s - want).abs() < 1e-12, "{s} vs {want}");
    }

    #[test]
    fn bm25_degenerate_corpora() {
        let empty: Vec<Vec<&str>> = Vec::new();
        let bm = Bm25::new(&empty);
        assert!(bm.is_empty());
        assert!(bm.top_n(&["x"], 3).is_empty());
        let blank: Vec<Vec<&str>> = vec![vec![], vec![]];
        assert_eq!(Bm25::new(&blank).scores(&["x"]), [0.0, 0.0]);
        assert_eq!(Bm25::new(&blank).top_n(&["x"], 5), [1, 0]);
    }
}
