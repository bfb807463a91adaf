//! The private store: one local SQLite file (placeholder; the store work fills it in).

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// A `hint:` line for the user, when there is something they can do.
    pub fn hint(&self) -> Option<String> {
        None
    }
}
