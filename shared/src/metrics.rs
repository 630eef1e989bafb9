//! What both daemons' Prometheus metrics share: registering a metric,
//! the build-info gauge, and the text exposition.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// Registers `metric` with `registry` and hands it back.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers `<name>{version="<version>"} 1` for the running build.
pub fn build_info(
    registry: &Registry,
    name: &str,
    help: &str,
    version: &str,
) -> prometheus::Result<()> {
    let build = register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &["version"])?,
    )?;
    build.with_label_values(&[version]).set(1);
    Ok(())
}

/// The exposition text of `registry` and its content type.
pub fn encode(registry: &Registry) -> prometheus::Result<(String, String)> {
    let encoder = TextEncoder::new();
    let text = encoder.encode_to_string(&registry.gather())?;
    Ok((text, encoder.format_type().to_owned()))
}
