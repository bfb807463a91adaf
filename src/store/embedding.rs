//! Item embeddings (stage 1's representative selection), kept so that a re-fit embeds only the items
//! added since, and a resumed evaluation does not embed a large history again.
//!
//! An embedding is keyed by its history item and a `method` string that names the model and the way
//! the text was embedded; it is removed with its item (and so by `forget`).

use std::collections::HashMap;

use rusqlite::params;

use super::profile::{from_blob, to_blob};
use super::{HistoryId, Store, StoreError};

impl Store {
    /// The stored embeddings of `items` under `method`, by item; items without one are absent.
    /// A stored vector of another length than `hidden` is treated as absent.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn embeddings(
        &self,
        method: &str,
        items: &[HistoryId],
        hidden: usize,
    ) -> Result<HashMap<HistoryId, Vec<f32>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT vector FROM embeddings WHERE history_id = ?1 AND method = ?2",
        )?;
        let mut found = HashMap::new();
        for &id in items {
            let mut rows = stmt.query(params![id, method])?;
            if let Some(row) = rows.next()? {
                let blob: Vec<u8> = row.get(0)?;
                if let Some(v) = from_blob(&blob, hidden) {
                    found.insert(id, v);
                }
            }
        }
        Ok(found)
    }

    /// Store (or replace) the embeddings of items under `method`, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails (an unknown item id included); nothing is stored then.
    pub fn put_embeddings(
        &self,
        method: &str,
        vectors: &[(HistoryId, &[f32])],
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO embeddings (history_id, method, vector) VALUES (?1, ?2, ?3)",
            )?;
            for (id, v) in vectors {
                stmt.execute(params![id, method, to_blob(v)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{NewItem, Store};

    #[test]
    fn embeddings_round_trip_per_method_and_go_with_their_item() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let user = store.create_user("ada").unwrap();
        let item = |s: &str| NewItem {
            task: "t".into(),
            input: s.into(),
            output: "o".into(),
            time: None,
            source_id: None,
        };
        store.add_history(user.id, &[item("a"), item("b")]).unwrap();
        let ids: Vec<_> = store
            .history(user.id)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        assert!(store.embeddings("m1", &ids, 2).unwrap().is_empty());

        store
            .put_embeddings("m1", &[(ids[0], &[1.0, -2.5][..])])
            .unwrap();
        let got = store.embeddings("m1", &ids, 2).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[&ids[0]], vec![1.0, -2.5]);
        assert!(store.embeddings("m2", &ids, 2).unwrap().is_empty());
        // a vector of the wrong length is not served
        assert!(store.embeddings("m1", &ids, 3).unwrap().is_empty());

        let forgotten = store.forget_user("ada").unwrap();
        assert_eq!(forgotten.embeddings, 1);
        let n: i64 = store
            .conn
            .query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
