//! `flowscope-alert`'s part: webhook delivery and the links notifications carry.

use anyhow::bail;
use flowscope_alert::{DeliveryConfig, RetryPolicy};

use super::{Settings, duration};

/// The delivery worker's config.
pub(super) fn delivery(settings: &Settings) -> anyhow::Result<DeliveryConfig> {
    let defaults = RetryPolicy::default();
    let retry = RetryPolicy {
        horizon: duration(
            "webhook-retry-horizon",
            settings.webhook_retry_horizon.clone(),
            defaults.horizon,
        )?,
        base: duration(
            "webhook-retry-base",
            settings.webhook_retry_base.clone(),
            defaults.base,
        )?,
        cap: defaults.cap,
    };
    if retry.horizon.is_zero() || retry.base.is_zero() || retry.base > retry.cap {
        bail!(
            "--webhook-retry-horizon must be above zero and --webhook-retry-base between 1ms and {}s",
            retry.cap.as_secs()
        );
    }
    Ok(DeliveryConfig {
        allow_private: settings.allow_private_webhooks.unwrap_or(false),
        retry,
        ..DeliveryConfig::default()
    })
}

/// `--external-url`, checked.
pub(super) fn external_url(settings: &Settings) -> anyhow::Result<Option<String>> {
    settings
        .external_url
        .as_deref()
        .map(absolute_url)
        .transpose()
}

/// An absolute http(s) URL without a trailing slash, so links can be appended to it.
fn absolute_url(text: &str) -> anyhow::Result<String> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url.to_string()),
        _ => bail!(
            "--external-url `{text}` must be an absolute http(s) URL, e.g. https://flowscope.example.com"
        ),
    }
}
