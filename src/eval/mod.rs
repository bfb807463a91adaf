//! Evaluation on LaMP-format data: loader, official metrics, methods compared, report.
pub mod baseline;
pub mod lamp;
pub mod method;
pub mod metrics;
pub mod prompts;
pub mod report;
pub mod run;

pub use report::{EvalReport, MethodRow, Prediction};
pub use run::{EvalError, EvalOptions, Evaluator, GroupSize, Method, WORDS_STRENGTH};
