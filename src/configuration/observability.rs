//! `[log]`, `[telemetry]` and `[reconcile]`: what the service tells, and what it runs by itself.

use super::check_url;
use super::{ConfigError, Settings, invalid};
use crate::domain::{LogFormat, Mode};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf). Off while `otlp_endpoint`
/// is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where spans are POSTed, e.g. `http://otel-collector:4318/v1/traces`; a URL with no path
    /// gets `/v1/traces`. Empty: no traces, and no `traceparent` on outgoing calls.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces kept, 0 to 1; a trace started upstream keeps the caller's decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Bound on one export, retries included, and on the flush at shutdown: an unreachable
    /// collector never holds up the service or its shutdown longer.
    #[serde(default = "default_export_timeout_secs")]
    pub export_timeout_secs: u64,
}

fn default_service_name() -> String {
    "rolesync".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_export_timeout_secs() -> u64 {
    5
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: String::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            export_timeout_secs: default_export_timeout_secs(),
        }
    }
}

impl TelemetrySettings {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

/// `[reconcile]`: the scheduled reconcile. Off while `schedule` is empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// A cron expression in UTC: 5 fields, or 6 with seconds first.
    #[serde(default)]
    pub schedule: String,
    /// Write the fixes; else each scheduled reconcile is a dry run.
    #[serde(default)]
    pub fix: bool,
    #[serde(default)]
    pub mode: Mode,
}

impl ReconcileSettings {
    /// The schedule, parsed; None when off. Checked at start-up (`Settings::load`), so a
    /// running service only ever sees a valid one.
    pub fn cron(&self) -> Result<Option<croner::Cron>, String> {
        let s = self.schedule.trim();
        if s.is_empty() {
            return Ok(None);
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(s)
            .map(Some)
            .map_err(|e| format!("not a cron expression (5 fields, or 6 with seconds): {e}"))
    }
}

impl Settings {
    /// `telemetry.*`: checked whether or not traces are on, so a typo waits for no one.
    pub(super) fn check_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if t.enabled() {
            check_url("telemetry.otlp_endpoint", t.otlp_endpoint.trim())?;
        }
        if t.service_name.trim().is_empty() || t.service_name.len() > 255 {
            return Err(invalid(
                "telemetry.service_name",
                "must be 1 to 255 characters",
            ));
        }
        let ratio = t.sample_ratio;
        if ratio.is_nan() || !(0.0..=1.0).contains(&ratio) {
            return Err(invalid("telemetry.sample_ratio", "must be between 0 and 1"));
        }
        if !(1..=60).contains(&t.export_timeout_secs) {
            return Err(invalid(
                "telemetry.export_timeout_secs",
                "must be between 1 and 60",
            ));
        }
        Ok(())
    }
}
