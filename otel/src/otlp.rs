//! Export to an OpenTelemetry collector over OTLP/HTTP (protobuf), from a
//! thread of the exporter's own (no async runtime needed).

use opentelemetry_otlp::{ExporterBuildError, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// A tracer provider exporting spans in batches to the collector at
/// `endpoint`: a base URL (`http://127.0.0.1:4318`, spans go to its
/// `/v1/traces`) or the full URL of the traces endpoint. The resource
/// names the service `service_name`. Call
/// [`SdkTracerProvider::shutdown`] before exiting to send what is left.
pub fn tracer_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// `endpoint` with the traces path when it names only the collector.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let authority = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if authority.contains('/') {
        endpoint.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_base_url_gets_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/x/traces"),
            "http://c:4318/x/traces"
        );
    }
}
