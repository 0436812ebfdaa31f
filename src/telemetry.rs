//! Logs and traces.
//!
//! Logs: `tracing` with an env filter (`RUST_LOG`), human-readable or JSON (`log.format`). In
//! JSON each line is one object, and the fields of every span the line was logged in (`job.id`,
//! `chunk`, `attempt`, `request.id`, ...) are flattened into it, so a line inside a job carries
//! the job's id without the code adding it. Role changes are also logged under the `audit`
//! target as one structured line each. The rules (levels, fields, what is never logged):
//! `docs/logging.md`.
//!
//! Traces: when `telemetry.otlp_endpoint` is set, the same spans are exported as OpenTelemetry
//! spans over OTLP/HTTP (protobuf), and outgoing SCIM calls and webhook deliveries carry a W3C
//! `traceparent`. `RUST_LOG` filters both: rolesync's spans are at `info`, so a filter that
//! drops rolesync's `info` (e.g. `RUST_LOG=warn`) empties the traces too.

use crate::configuration::TelemetrySettings;
use crate::domain::LogFormat;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The instrumentation scope of rolesync's spans (the crate name).
const OWN_TARGET: &str = "rolesync";

/// Spans waiting for export; beyond, new spans are dropped (never memory without bound).
const MAX_QUEUED_SPANS: usize = 8192;

/// The tracer provider, if traces are on. `shutdown` flushes what is still queued.
#[must_use = "dropping it without `shutdown` loses the spans still queued"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    timeout: Duration,
}

impl Telemetry {
    pub fn traces_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter, within `telemetry.export_timeout_secs`
    /// whether or not the collector answers. Blocking work runs off the async threads.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let timeout = self.timeout;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        // The provider bounds itself; this bounds a provider that would not.
        match tokio::time::timeout(timeout + Duration::from_secs(1), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "traces: the last spans were not all exported")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "traces: the exporter's shutdown failed"),
            Err(_) => tracing::warn!(
                "traces: the exporter did not stop in time; spans still queued are lost"
            ),
        }
    }
}

/// Why traces cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration key `telemetry.otlp_endpoint`: {0}")]
    Exporter(String),
    #[error("traces need a tokio runtime")]
    NoRuntime,
}

/// Logs only (tests, other commands): installs the global subscriber once; later calls
/// are no-ops.
pub fn init(format: LogFormat, default_filter: &str) {
    install(format, default_filter, None);
}

/// Logs, and traces when `settings` turn them on. Call inside the tokio runtime: exports run on
/// it. Installs the global subscriber once; a later call installs nothing and returns a handle
/// with no traces.
pub fn init_with_traces(
    format: LogFormat,
    default_filter: &str,
    settings: &TelemetrySettings,
) -> Result<Telemetry, TelemetryError> {
    let timeout = Duration::from_secs(settings.export_timeout_secs);
    if !settings.enabled() {
        install(format, default_filter, None);
        return Ok(Telemetry {
            provider: None,
            timeout,
        });
    }
    let provider = tracer_provider(settings)?;
    let installed = install(format, default_filter, Some(&provider));
    if installed {
        tracing::info!(
            otlp.endpoint = %traces_url(&settings.otlp_endpoint),
            sample_ratio = settings.sample_ratio,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry {
        provider: installed.then_some(provider),
        timeout,
    })
}

/// Returns whether this call installed the global subscriber.
///
/// One filter for everything, set on the registry: logs and traces see the same spans. (Filters
/// per layer were tried: their per-thread state goes stale when a library asks `enabled!`
/// without logging after, which disabled some of rolesync's spans at random.)
fn install(format: LogFormat, default_filter: &str, provider: Option<&SdkTracerProvider>) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let traces = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(OWN_TARGET))
            .with_tracked_inactivity(false)
    });
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    if format == LogFormat::Json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok()
    }
}

fn tracer_provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    let timeout = Duration::from_secs(settings.export_timeout_secs);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttp {
            http,
            runtime,
            failing: Arc::new(AtomicBool::new(false)),
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(&settings.otlp_endpoint))
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_scheduled_delay(Duration::from_secs(1))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.trim().to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The traces URL: `endpoint` as given, or with `/v1/traces` when it names no path.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    match reqwest::Url::parse(endpoint) {
        Ok(u) if u.path() == "/" || u.path().is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_owned(),
    }
}

/// The OTLP exporter's HTTP client: the service's own reqwest (rustls on aws-lc-rs, no second
/// TLS stack), run on the service's runtime. The SDK exports from a thread of its own and waits
/// on the answer there; the request itself is a task of the runtime, bounded by the client's
/// timeout. A collector that stops answering is logged once, and once more when it is back.
#[derive(Debug)]
struct OtlpHttp {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    failing: Arc<AtomicBool>,
}

/// Largest collector answer read (a partial-success message is a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        let failing = self.failing.clone();
        let task = self.runtime.spawn(async move {
            let result = send(&http, request).await;
            match &result {
                Ok(r) if r.status().is_success() => {
                    if failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("traces: the collector accepts spans again");
                    }
                }
                Ok(r) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(http.response.status_code = r.status().as_u16(), "traces: the collector refuses spans; they are dropped until it accepts them");
                    }
                }
                Err(e) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "traces: the collector cannot be reached; spans are dropped until it can");
                    }
                }
            }
            result
        });
        task.await?
    }
}

async fn send(
    http: &reqwest::Client,
    request: http::Request<bytes::Bytes>,
) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
    let request = reqwest::Request::try_from(request)?;
    let mut resp = http
        .execute(request)
        .await
        .map_err(reqwest::Error::without_url)?;
    let mut answer = http::Response::builder().status(resp.status());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(reqwest::Error::without_url)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(headers) = answer.headers_mut() {
        *headers = resp.headers().clone();
    }
    Ok(answer.body(bytes::Bytes::from(body))?)
}

/// The W3C `traceparent` of `span`, when traces are on (else `None`: nothing is sent).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The W3C `traceparent` of the current span (see `traceparent_of`).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The trace headers (`traceparent`, and `tracestate` when there is one) of the current span,
/// for an outgoing call; empty when traces are off.
pub fn trace_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    }
    headers
}

/// Makes `span` a child of the remote span `traceparent` names. Call before the span is first
/// entered or has children: an OpenTelemetry span's parent is fixed when it starts. An absent
/// or malformed value leaves the span a root.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the caller's span when the request carries a valid `traceparent`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the fields of the spans the event
/// is in (outermost first, so an inner span's field wins; `otel.*` left out), `span` (the
/// innermost span's name), then the event's own fields (they win over the spans'), `message`
/// among them.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let meta = event.metadata();
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::String(now));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("target".into(), Value::String(meta.target().into()));
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                innermost = Some(span.name());
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields.as_str()) {
                    // `otel.*` only instructs the trace exporter (span name, kind, status).
                    line.extend(m.into_iter().filter(|(k, _)| !k.starts_with("otel.")));
                }
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::String(name.into()));
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_path_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/traces"),
            "https://otel.example/custom/traces"
        );
    }

    #[test]
    fn without_traces_nothing_is_propagated() {
        assert_eq!(current_traceparent(), None);
        assert!(trace_headers().is_empty());
        // A malformed parent is ignored, not an error.
        set_parent(&tracing::Span::none(), Some("not-a-traceparent"));
    }
}
