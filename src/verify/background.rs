//! `ripple run`'s background verification (`[verify]`): a live pass over every table a route
//! gives a sink, every `interval_s`; its report is left where the dashboard's sync panel reads it,
//! and its figures become the `ripple_verify_*` metrics (`ripple_verify_differences` to alert on).

use super::{VerifyArgs, VerifyReport};
use crate::config::{BackgroundVerifyConfig, Config};
use crate::telemetry::{Event, Telemetry};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs passes until the task is dropped.
pub async fn run(
    config: Config,
    settings: BackgroundVerifyConfig,
    telemetry: Telemetry,
    report_path: Option<PathBuf>,
) {
    let args = VerifyArgs {
        tables: settings.tables.clone(),
        json: true,
        max_memory_mb: settings.max_memory_mb,
        settle: Some(Duration::from_secs(settings.settle_s)),
        routed_only: true,
        ..Default::default()
    };
    let interval = Duration::from_secs(settings.interval_s);
    loop {
        tokio::time::sleep(interval).await;
        let started = Instant::now();
        let result = super::run(&config, &args).await;
        let took = started.elapsed();
        let now_ms = chrono::Utc::now().timestamp_millis();
        match &result {
            Ok(report) => {
                tracing::info!(
                    equal = report.all_equal(),
                    comparisons = report.tables.len(),
                    elapsed_ms = took.as_millis() as u64,
                    "background verification pass"
                );
                if let Some(path) = &report_path {
                    write_report(path, report);
                }
                telemetry.emit(Event::Verified {
                    report: Ok(report),
                    took,
                    now_ms,
                });
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(error = %message, "background verification could not run");
                telemetry.emit(Event::Verified {
                    report: Err(&message),
                    took,
                    now_ms,
                });
            }
        }
    }
}

/// Leaves `report` for the dashboard's sync panel (as `ripple verify` does); a read-only
/// directory only costs the panel.
pub fn write_report(path: &Path, report: &VerifyReport) {
    if let Ok(mut json) = serde_json::to_value(report) {
        json["finished_at"] = chrono::Utc::now().timestamp_millis().into();
        json["all_equal"] = report.all_equal().into();
        if let Err(e) = std::fs::write(path, json.to_string()) {
            tracing::debug!(error = %e, path = %path.display(), "verify report not kept");
        }
    }
}
