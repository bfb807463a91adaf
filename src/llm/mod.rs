//! The engine: llama.cpp through a thin safe layer of our own over `llama-cpp-sys-2`.
//!
//! This is the only module with `unsafe` code. It owns the C handles (model, context, batch, sampler,
//! each a `NonNull` freed in `Drop`), the model's tokenizer and chat template, generation, mean-pooled
//! embeddings, and the eval callback through which CHAMELEON reads ([`Capture`]) and rewrites
//! ([`crate::steer::EditPlan`]) the MLP output of chosen decoder layers inside the forward pass.
//!
//! Why not `llama-cpp-2`'s safe API: llama.cpp's eval callback (`cb_eval` in `llama_context_params`)
//! is what everything here stands on, and `llama-cpp-2` dropped it after 0.1.139; its context params and
//! handles are crate-private and not `repr(transparent)`, so the raw context pointer cannot be had from
//! its safe types without transmuting private structs. Mixing the two crates would mean two owners of
//! one backend. So we bind the C API directly, through the same `llama-cpp-sys-2` that `llama-cpp-2`
//! builds on, and keep the surface small: what chameleon uses, nothing else. Every `unsafe` block says
//! why it is sound in a `// SAFETY:` line; no raw pointer appears in a public signature; nothing panics
//! across the C boundary (the callback catches and records, and the next call returns the error).
#![allow(unsafe_code)]

mod backend;
mod context;
mod error;
mod gguf_io;
mod hook;
mod model;

pub use backend::{Device, devices, gpu_offload, set_verbose};
pub use context::{
    BatchRow, Capture, CaptureRequest, Context, ContextParams, GenerateOptions, Generation,
    SeqSampler, StopReason, TextStream,
};
pub use error::LlmError;
pub use gguf_io::{Matrix, read_matrices, write_control_vector, write_lora};
pub use hook::{MlpNode, mlp_node};
pub use model::{ChatMessage, LoraId, Model, ModelInfo, ModelParams, Token};
