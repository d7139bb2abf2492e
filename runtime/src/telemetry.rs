//! Logs and traces of the `switchboard-runtime` binary.
//!
//! Logs go to stderr (text or JSON, filtered by `RUST_LOG`). Traces are exported over
//! OTLP/HTTP (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other standard `OTEL_*` variables
//! (headers, timeout, compression, service name, resource attributes) apply as the
//! OpenTelemetry SDK defines them. Without an endpoint no OpenTelemetry layer is
//! installed, so the per-message spans (debug level) are disabled at their call site.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

/// The `service.name` of exported spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "switchboard-runtime";

/// Resource attribute naming the runtime (config `runtime.name`).
pub const RUNTIME_NAME_ATTRIBUTE: &str = "switchboard.runtime.name";

/// How the process logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installed logging and tracing; [`Telemetry::shutdown`] flushes pending spans.
#[must_use = "dropping the guard without shutdown loses the spans not yet exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still batched and stops the exporter (bounded by the
    /// exporter's timeout). Runs off the async threads: the SDK blocks while flushing.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(10))
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("switchboard-runtime: flushing traces failed: {e}"),
            Err(e) => eprintln!("switchboard-runtime: flushing traces failed: {e}"),
        }
    }
}

/// Where traces go, read from the standard OpenTelemetry environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// Whether an OTLP endpoint is configured (and the SDK not disabled).
    pub enabled: bool,
    /// Whether `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names the service.
    pub service_named: bool,
}

impl ExportSettings {
    /// Reads the settings through `env` (a lookup, so tests need not touch the process
    /// environment).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true")
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let enabled = !disabled
            && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        let service_named = set("OTEL_SERVICE_NAME")
            || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
        Self {
            enabled,
            service_named,
        }
    }
}

/// Installs logs (filtered by `RUST_LOG`, else `default_filter`) and, when configured,
/// OTLP trace export tagged with `runtime_name`. Call once, inside the tokio runtime.
pub fn init(output: LogOutput, default_filter: &str, runtime_name: Option<&str>) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match output {
        LogOutput::Json => fmt.json().with_filter(filter).boxed(),
        LogOutput::Text => fmt.with_filter(filter).boxed(),
    };
    let settings = ExportSettings::from_env(|k| std::env::var(k).ok());
    let (otel, provider) = if settings.enabled {
        match provider(&settings, runtime_name) {
            Ok(provider) => {
                let tracer = provider.tracer("switchboard-runtime");
                // The runtime's own spans (one per message, debug level) and whatever
                // info-level spans libraries and agents open.
                let targets = Targets::new()
                    .with_target("switchboard_runtime", LevelFilter::DEBUG)
                    .with_default(LevelFilter::INFO);
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(targets)
                    .boxed();
                (Some(layer), Some(provider))
            }
            Err(e) => {
                eprintln!("switchboard-runtime: traces are not exported: {e}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

fn provider(
    settings: &ExportSettings,
    runtime_name: Option<&str>,
) -> Result<SdkTracerProvider, String> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(TokioHttpClient::new()?)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if !settings.service_named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    if let Some(name) = runtime_name {
        resource = resource.with_attribute(KeyValue::new(RUNTIME_NAME_ATTRIBUTE, name.to_owned()));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The OTLP exporter's HTTP client: the runtime's reqwest (rustls, pooled), driven on
/// the tokio runtime. The SDK's batch processor exports from its own thread, outside
/// any tokio context, so each request is spawned onto the runtime and awaited there.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    tokio: tokio::runtime::Handle,
}

impl TokioHttpClient {
    fn new() -> Result<Self, String> {
        let tokio = tokio::runtime::Handle::try_current()
            .map_err(|_| "telemetry must be set up inside the tokio runtime".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, tokio })
    }
}

#[async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.tokio.spawn(async move {
            let mut req = client
                .request(parts.method, parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let response = req.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn export_is_on_only_with_an_endpoint_and_not_disabled() {
        assert!(!ExportSettings::from_env(env(&[])).enabled);
        assert!(!ExportSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).enabled);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert!(ExportSettings::from_env(env(&on)).enabled);
        let traces = [(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        )];
        assert!(ExportSettings::from_env(env(&traces)).enabled);
        let off = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert!(!ExportSettings::from_env(env(&off)).enabled);
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert!(!ExportSettings::from_env(env(&none)).enabled);
    }

    #[test]
    fn the_service_name_defaults_unless_the_environment_names_it() {
        assert!(!ExportSettings::from_env(env(&[])).service_named);
        assert!(ExportSettings::from_env(env(&[("OTEL_SERVICE_NAME", "x")])).service_named);
        let attrs = [("OTEL_RESOURCE_ATTRIBUTES", "a=b,service.name=x")];
        assert!(ExportSettings::from_env(env(&attrs)).service_named);
    }
}
