//! Fitted profiles: per-layer personal and generic directions, bound to the model they were fitted with.
//!
//! A profile belongs to one user or one group and one model; saving another for the same owner and
//! model replaces it. The directions are stored bit for bit (little-endian `f32` blobs), so a loaded
//! profile edits the model exactly as the fitted one did.

use std::collections::HashSet;
use std::fmt;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::group::find_group;
use super::user::find_user;
use super::{ProfileId, Store, StoreError};

/// What a profile must match to be used with a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The model's fingerprint (as `chameleon info` shows it).
    pub fingerprint: String,
    /// Number of decoder layers.
    pub n_layer: usize,
    /// Hidden size: the length of every direction.
    pub hidden: usize,
}

/// Whom a profile belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// One user, by name.
    User(String),
    /// A group, by name: one profile that serves every member.
    Group(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(name) => write!(f, "user `{name}`"),
            Owner::Group(name) => write!(f, "group `{name}`"),
        }
    }
}

/// The directions of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDirections {
    /// Decoder layer index, from 0.
    pub layer: usize,
    /// Personal direction (unit length).
    pub p: Vec<f32>,
    /// Generic direction (unit length).
    pub n: Vec<f32>,
    /// The layer's best CCS loss; the layer choice ranks layers by it. Stored as an SQLite `REAL`, which
    /// keeps every `f32` exactly except the sign of a zero (a loss is never negative).
    pub ccs_loss: f32,
}

/// A fitted profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The model it was fitted with.
    pub model: ModelIdentity,
    /// The layers to edit, a subset of those in `layers`.
    pub selected_layers: Vec<usize>,
    /// Directions per layer, ordered by layer when loaded.
    pub layers: Vec<LayerDirections>,
    /// The fit's parameters, as recorded by the fit.
    pub params: serde_json::Value,
    /// When it was fitted, seconds since the Unix epoch.
    pub created: i64,
}

/// What is wrong with a profile to be saved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// The model fingerprint is empty.
    #[error("the model fingerprint is empty")]
    NoFingerprint,
    /// Zero layers or zero hidden size.
    #[error("a model of {n_layer} layers of size {hidden} has nothing to edit")]
    EmptyShape { n_layer: usize, hidden: usize },
    /// A layer index at or past the model's layer count.
    #[error("layer {layer} is out of range: the model has {n_layer} layers")]
    LayerOutOfRange { layer: usize, n_layer: usize },
    /// Two entries for one layer.
    #[error("layer {0} has two sets of directions")]
    DuplicateLayer(usize),
    /// A direction whose length is not the hidden size.
    #[error("layer {layer}: `{which}` has {len} values, the model's hidden size is {hidden}")]
    VectorLen {
        layer: usize,
        which: &'static str,
        len: usize,
        hidden: usize,
    },
    /// A NaN or infinite value.
    #[error("layer {layer}: `{which}` is not finite")]
    NonFinite { layer: usize, which: &'static str },
    /// A direction that is neither unit nor zero.
    #[error("layer {layer}: `{which}` has norm {}, not 1 (or 0: no direction)", crate::steer::show(*norm))]
    NotUnit {
        layer: usize,
        which: &'static str,
        norm: f64,
    },
    /// A per-layer scale of the additive edit that is negative, not finite, or absurdly large.
    #[error("layer {layer}: the additive scale {} is outside [0, 1e6]", crate::steer::show(*scale))]
    BadScale { layer: usize, scale: f64 },
    /// A selected layer without directions.
    #[error("selected layer {0} has no directions")]
    SelectedMissing(usize),
    /// A layer selected twice.
    #[error("layer {0} is selected twice")]
    SelectedTwice(usize),
}

impl Profile {
    /// Check that the profile is consistent with its model and can be stored and exported.
    ///
    /// # Errors
    /// The first inconsistency found.
    pub fn check(&self) -> Result<(), ProfileError> {
        let ModelIdentity {
            fingerprint,
            n_layer,
            hidden,
        } = &self.model;
        let (n_layer, hidden) = (*n_layer, *hidden);
        if fingerprint.is_empty() {
            return Err(ProfileError::NoFingerprint);
        }
        if n_layer == 0 || hidden == 0 {
            return Err(ProfileError::EmptyShape { n_layer, hidden });
        }
        let mut seen = HashSet::new();
        for l in &self.layers {
            let layer = l.layer;
            if layer >= n_layer {
                return Err(ProfileError::LayerOutOfRange { layer, n_layer });
            }
            if !seen.insert(layer) {
                return Err(ProfileError::DuplicateLayer(layer));
            }
            for (which, v) in [("p", &l.p), ("n", &l.n)] {
                if v.len() != hidden {
                    return Err(ProfileError::VectorLen {
                        layer,
                        which,
                        len: v.len(),
                        hidden,
                    });
                }
                if !v.iter().all(|x| x.is_finite()) {
                    return Err(ProfileError::NonFinite { layer, which });
                }
                let norm = crate::steer::norm64(v);
                if norm != 0.0 && (norm - 1.0).abs() > f64::from(crate::steer::UNIT_TOLERANCE) {
                    return Err(ProfileError::NotUnit { layer, which, norm });
                }
            }
            if !l.ccs_loss.is_finite() {
                return Err(ProfileError::NonFinite {
                    layer,
                    which: "ccs_loss",
                });
            }
        }
        // the additive edit's per-layer scales (the `align` route's), where the fit recorded them
        if let Some(scales) = self.params["align"]["scale"].as_array() {
            for (layer, v) in scales.iter().enumerate() {
                let scale = v.as_f64().unwrap_or(f64::NAN);
                if !(0.0..=f64::from(crate::steer::MAX_SCALE)).contains(&scale) {
                    return Err(ProfileError::BadScale { layer, scale });
                }
            }
        }
        let mut selected = HashSet::new();
        for &layer in &self.selected_layers {
            if !seen.contains(&layer) {
                return Err(ProfileError::SelectedMissing(layer));
            }
            if !selected.insert(layer) {
                return Err(ProfileError::SelectedTwice(layer));
            }
        }
        Ok(())
    }
}

impl Store {
    /// Save a profile for `owner`, replacing the owner's profile for the same model; one transaction.
    ///
    /// # Errors
    /// [`StoreError::InvalidProfile`] when [`Profile::check`] fails; [`StoreError::UnknownUser`] or
    /// [`StoreError::UnknownGroup`] when the owner does not exist.
    pub fn save_profile(&self, owner: &Owner, profile: &Profile) -> Result<ProfileId, StoreError> {
        profile
            .check()
            .map_err(|problem| StoreError::InvalidProfile {
                owner: owner.clone(),
                problem,
            })?;
        let tx = self.begin_write()?;
        let id = insert_profile(&tx, owner, profile)?;
        tx.commit()?;
        Ok(id)
    }

    /// Load `owner`'s profile for the model `expected` describes.
    ///
    /// Returns `None` when the owner has no profile at all. When the owner has profiles but none for
    /// this model, the most recent one is refused: first on its shape (layer count, hidden size), then
    /// on its fingerprint.
    ///
    /// # Errors
    /// [`StoreError::UnknownUser`] or [`StoreError::UnknownGroup`] when the owner does not exist;
    /// [`StoreError::ProfileShape`] or [`StoreError::ProfileModel`] when the profile was fitted for
    /// another model; [`StoreError::CorruptProfile`] when the stored profile does not decode.
    pub fn load_profile(
        &self,
        owner: &Owner,
        expected: &ModelIdentity,
    ) -> Result<Option<Profile>, StoreError> {
        let (column, owner_id) = owner_key(&self.conn, owner)?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE {column} = ?1
             ORDER BY fingerprint = ?2 DESC, created DESC, id DESC LIMIT 1"
        ))?;
        let Some(head) = stmt
            .query_row(params![owner_id, expected.fingerprint], head_row)
            .optional()?
        else {
            return Ok(None);
        };
        let stored = &head.model;
        if stored.n_layer != expected.n_layer || stored.hidden != expected.hidden {
            return Err(StoreError::ProfileShape {
                owner: owner.clone(),
                fingerprint: stored.fingerprint.clone(),
                stored_layers: stored.n_layer,
                stored_hidden: stored.hidden,
                expected_layers: expected.n_layer,
                expected_hidden: expected.hidden,
            });
        }
        if stored.fingerprint != expected.fingerprint {
            return Err(StoreError::ProfileModel {
                owner: owner.clone(),
                stored: stored.fingerprint.clone(),
                expected: expected.fingerprint.clone(),
            });
        }
        Ok(Some(load_body(&self.conn, owner, head)?))
    }

    /// Every profile of `owner`, for any model, oldest first.
    ///
    /// # Errors
    /// [`StoreError::UnknownUser`] or [`StoreError::UnknownGroup`]; [`StoreError::CorruptProfile`].
    pub fn profiles(&self, owner: &Owner) -> Result<Vec<Profile>, StoreError> {
        let (column, owner_id) = owner_key(&self.conn, owner)?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE {column} = ?1 ORDER BY created, id"
        ))?;
        let heads: Vec<Head> = stmt
            .query_map([owner_id], head_row)?
            .collect::<Result<_, _>>()?;
        heads
            .into_iter()
            .map(|head| load_body(&self.conn, owner, head))
            .collect()
    }
}

const PROFILE_COLUMNS: &str = "id, fingerprint, n_layer, hidden, selected_layers, params, created";

/// A profile row before its layers are read.
struct Head {
    id: ProfileId,
    model: ModelIdentity,
    selected_layers: String,
    params: String,
    created: i64,
}

fn head_row(row: &Row<'_>) -> rusqlite::Result<Head> {
    let size = |i| -> rusqlite::Result<usize> {
        let v: i64 = row.get(i)?;
        usize::try_from(v).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Integer, e.into())
        })
    };
    Ok(Head {
        id: row.get(0)?,
        model: ModelIdentity {
            fingerprint: row.get(1)?,
            n_layer: size(2)?,
            hidden: size(3)?,
        },
        selected_layers: row.get(4)?,
        params: row.get(5)?,
        created: row.get(6)?,
    })
}

/// The column that holds `owner` and the owner's row id.
fn owner_key(conn: &Connection, owner: &Owner) -> Result<(&'static str, i64), StoreError> {
    match owner {
        Owner::User(name) => {
            let user =
                find_user(conn, name)?.ok_or_else(|| StoreError::UnknownUser(name.clone()))?;
            Ok(("user_id", user.id.get()))
        }
        Owner::Group(name) => {
            let group =
                find_group(conn, name)?.ok_or_else(|| StoreError::UnknownGroup(name.clone()))?;
            Ok(("group_id", group.get()))
        }
    }
}

/// Read a profile's layers and decode it.
fn load_body(conn: &Connection, owner: &Owner, head: Head) -> Result<Profile, StoreError> {
    let corrupt = |detail: String| StoreError::CorruptProfile {
        owner: owner.clone(),
        detail,
    };
    let hidden = head.model.hidden;
    let mut stmt = conn.prepare_cached(
        "SELECT layer, p, n, ccs_loss FROM profile_layers WHERE profile_id = ?1 ORDER BY layer",
    )?;
    let mut rows = stmt.query([head.id])?;
    let mut layers = Vec::new();
    while let Some(row) = rows.next()? {
        let layer: i64 = row.get(0)?;
        let layer = usize::try_from(layer)
            .ok()
            .filter(|&l| l < head.model.n_layer)
            .ok_or_else(|| corrupt(format!("layer {layer} is out of range")))?;
        let vector = |i: usize, which: &str| -> Result<Vec<f32>, StoreError> {
            let blob = row.get_ref(i)?.as_blob().map_err(rusqlite::Error::from)?;
            from_blob(blob, hidden).ok_or_else(|| {
                corrupt(format!(
                    "layer {layer}: `{which}` has {} bytes, expected {}",
                    blob.len(),
                    hidden * 4
                ))
            })
        };
        let p = vector(1, "p")?;
        let n = vector(2, "n")?;
        let ccs_loss: f64 = row.get(3)?;
        layers.push(LayerDirections {
            layer,
            p,
            n,
            ccs_loss: ccs_loss as f32,
        });
    }
    let selected_layers = serde_json::from_str(&head.selected_layers)
        .map_err(|e| corrupt(format!("the selected layers do not parse: {e}")))?;
    let params = serde_json::from_str(&head.params)
        .map_err(|e| corrupt(format!("the parameters do not parse: {e}")))?;
    let profile = Profile {
        model: head.model,
        selected_layers,
        layers,
        params,
        created: head.created,
    };
    // what the engine relies on is checked again: the file may have been changed outside chameleon
    profile.check().map_err(|e| corrupt(e.to_string()))?;
    Ok(profile)
}

/// Insert a checked profile inside the caller's transaction, replacing the owner's one for the same model.
pub(super) fn insert_profile(
    conn: &Connection,
    owner: &Owner,
    profile: &Profile,
) -> Result<ProfileId, StoreError> {
    let (column, owner_id) = owner_key(conn, owner)?;
    let model = &profile.model;
    // the old profile's layers go by `ON DELETE CASCADE`
    conn.prepare_cached(&format!(
        "DELETE FROM profiles WHERE {column} = ?1 AND fingerprint = ?2"
    ))?
    .execute(params![owner_id, model.fingerprint])?;
    let selected =
        serde_json::to_string(&profile.selected_layers).expect("a list of integers serialises");
    let fit_params = serde_json::to_string(&profile.params).expect("a JSON value serialises");
    let id: ProfileId = conn
        .prepare_cached(&format!(
            "INSERT INTO profiles ({column}, fingerprint, n_layer, hidden, selected_layers, params, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id"
        ))?
        .query_row(
            params![
                owner_id,
                model.fingerprint,
                model.n_layer as i64,
                model.hidden as i64,
                selected,
                fit_params,
                profile.created
            ],
            |row| row.get(0),
        )?;
    let mut stmt =
        conn.prepare_cached("INSERT INTO profile_layers (profile_id, layer, p, n, ccs_loss) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for l in &profile.layers {
        stmt.execute(params![
            id,
            l.layer as i64,
            to_blob(&l.p),
            to_blob(&l.n),
            f64::from(l.ccs_loss)
        ])?;
    }
    Ok(id)
}

/// A vector as little-endian `f32` bytes.
pub(super) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian `f32` bytes as a vector of `len` values; `None` when the length is wrong.
pub(super) fn from_blob(bytes: &[u8], len: usize) -> Option<Vec<f32>> {
    if bytes.len() != len.checked_mul(4)? {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            model: ModelIdentity {
                fingerprint: "fp".into(),
                n_layer: 4,
                hidden: 2,
            },
            selected_layers: vec![1],
            layers: vec![LayerDirections {
                layer: 1,
                p: vec![1.0, 0.0],
                n: vec![0.0, -1.0],
                ccs_loss: 0.5,
            }],
            params: serde_json::json!({"k": 10}),
            created: 0,
        }
    }

    #[test]
    fn check_catches_each_inconsistency() {
        assert_eq!(profile().check(), Ok(()));
        let mut p = profile();
        p.layers[0].layer = 4;
        assert_eq!(
            p.check(),
            Err(ProfileError::LayerOutOfRange {
                layer: 4,
                n_layer: 4
            })
        );
        let mut p = profile();
        p.layers[0].n.push(0.0);
        assert_eq!(
            p.check(),
            Err(ProfileError::VectorLen {
                layer: 1,
                which: "n",
                len: 3,
                hidden: 2
            })
        );
        let mut p = profile();
        p.layers[0].p[0] = f32::NAN;
        assert_eq!(
            p.check(),
            Err(ProfileError::NonFinite {
                layer: 1,
                which: "p"
            })
        );
        let mut p = profile();
        p.selected_layers = vec![2];
        assert_eq!(p.check(), Err(ProfileError::SelectedMissing(2)));
        let mut p = profile();
        p.layers.push(p.layers[0].clone());
        assert_eq!(p.check(), Err(ProfileError::DuplicateLayer(1)));
    }

    #[test]
    fn blob_is_little_endian_and_length_checked() {
        let v = [1.0f32, -0.0, f32::from_bits(1)];
        let blob = to_blob(&v);
        assert_eq!(&blob[..4], &[0x00, 0x00, 0x80, 0x3f]);
        let back = from_blob(&blob, 3).unwrap();
        assert!(v.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(from_blob(&blob, 2), None);
        assert_eq!(from_blob(&blob[..11], 3), None);
    }
}
