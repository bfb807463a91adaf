//! Evaluation on LaMP-format data: loader, official metrics, methods compared, report.
pub mod baseline;
pub mod lamp;
pub mod metrics;
pub mod prompts;
pub mod run;

pub use run::{EvalError, EvalOptions, EvalReport, Evaluator, GroupSize, Method};
