//! Evaluation on LaMP-format data: loader, official metrics, methods compared, report.
