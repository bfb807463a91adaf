//! chameleon: personalise a local, quantized LLM for one person, on their own machine.
//!
//! It implements CHAMELEON ("Personalize Your LLM: Fake it then Align it", arXiv 2503.01048) on top of
//! llama.cpp. The pipeline, one module per stage:
//!
//! 1. [`store`]: the user's history, insights, pairs and fitted profiles live in one local SQLite file.
//! 2. [`personalize`] select: embed the history, keep the k most representative items (PCA).
//! 3. [`personalize`] insight: the model writes a personal and a neutral insight about the user.
//! 4. [`personalize`] pairs: the model answers queries twice, personalised and neutral.
//! 5. [`personalize`] fit: per-layer personal (SVD) and generic (CCS) directions in the MLP outputs,
//!    captured through [`llm`]; the layers to edit are chosen by the running-mean rule.
//! 6. [`steer`]: at inference an eval callback edits the chosen layers' MLP outputs,
//!    `x += alpha <x,p> p`, then `x -= beta <x,n> n`; or the same edit exported as a rank-2 LoRA.
//! 7. [`eval`]: LaMP loader, the official metrics, and the methods compared.
//!
//! Beside the paper's route, [`personalize::align`] finds a user's direction from their real answers
//! against the model's own (an additive edit, `x += gamma * scale * c`, which [`adapters`] also writes
//! as a llama.cpp control vector), and [`personalize::policy`] chooses each user's way of answering on
//! their own held-out history.
//!
//! [`llm`] is the only module with `unsafe` code: a thin safe layer over `llama-cpp-sys-2`.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod adapters;
pub mod answer;
pub mod cli;
pub mod digest;
pub mod eval;
pub mod files;
pub mod llm;
pub mod paths;
pub mod personalize;
pub mod retrieval;
pub mod rouge;
pub mod serve;
pub mod steer;
pub mod store;
