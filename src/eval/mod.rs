//! Evaluation on LaMP-format data: loader, official metrics, methods compared, report.
pub mod lamp;
pub mod metrics;
pub mod prompts;
