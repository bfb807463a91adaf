//! The evaluation's answers, kept so that a killed run resumes and a re-run with extra methods only
//! answers what is new.
//!
//! An answer is keyed by a run key, a hash the evaluation computes from everything that decides the
//! answer (model, data set, split, method and its parameters, prompt version), and the question's id.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, unix_now};

/// One stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalAnswer {
    /// The model's text, before answer extraction.
    pub raw: String,
    /// Seconds it took to answer.
    pub seconds: f64,
}

impl Store {
    /// The stored answer of `question` under `run`, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn eval_answer(&self, run: &str, question: &str) -> Result<Option<EvalAnswer>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT raw, seconds FROM eval_answers WHERE run = ?1 AND question = ?2",
        )?;
        Ok(stmt
            .query_row(params![run, question], |r| {
                Ok(EvalAnswer {
                    raw: r.get(0)?,
                    seconds: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Store (or replace) the answer of `question` under `run`; durable when this returns.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails.
    pub fn put_eval_answer(
        &self,
        run: &str,
        question: &str,
        answer: &EvalAnswer,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO eval_answers (run, question, raw, seconds, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                run,
                question,
                answer.raw,
                answer.seconds,
                unix_now()
            ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(store.eval_answer("r", "q1").unwrap(), None);
        let a = EvalAnswer {
            raw: "comedy".into(),
            seconds: 0.25,
        };
        store.put_eval_answer("r", "q1", &a).unwrap();
        assert_eq!(store.eval_answer("r", "q1").unwrap(), Some(a));
        assert_eq!(store.eval_answer("other", "q1").unwrap(), None);
        let b = EvalAnswer {
            raw: "drama".into(),
            seconds: 1.0,
        };
        store.put_eval_answer("r", "q1", &b).unwrap();
        assert_eq!(store.eval_answer("r", "q1").unwrap(), Some(b));
    }
}
