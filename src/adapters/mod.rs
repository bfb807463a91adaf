//! A profile's edit as files stock llama.cpp loads: the paper's projection edit as a rank-2 LoRA
//! adapter on `ffn_down` ([`lora`]), the additive edit as a control vector ([`cvec`]). This module
//! sits above both [`crate::steer`] (the edit's math) and [`crate::llm`] (the GGUF writer), so
//! neither depends on the other for files.

pub mod cvec;
pub mod lora;
