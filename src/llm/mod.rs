//! The engine: llama.cpp through a thin safe layer over `llama-cpp-sys-2` (work in progress).
#![allow(unsafe_code)]

use std::path::Path;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{0}")]
    Other(String),
}

impl LlmError {
    pub fn hint(&self) -> Option<String> {
        None
    }
}

pub fn set_verbose(_v: bool) {}

#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    pub gpu_layers: i32,
}

#[derive(Debug, Clone, Default)]
pub struct ContextParams {
    pub n_ctx: u32,
    pub n_threads: Option<usize>,
}

pub struct Model;

impl Model {
    pub fn load(_p: &Path, _params: &ModelParams) -> Result<Model, LlmError> {
        Err(LlmError::Other("todo".into()))
    }
}
