//! The CHAMELEON pipeline: select -> insight -> pairs -> capture -> fit -> profile.
pub mod fit;
pub mod select;
