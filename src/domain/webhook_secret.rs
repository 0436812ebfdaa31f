//! A Standard Webhooks signing secret: `whsec_` followed by the base64 of the key bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The key bytes of a `whsec_…` secret. Parsed once: a value that is not one is refused where
/// it is read (the configuration), so signing never meets a malformed secret.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// None unless `s` is `whsec_<base64>` with at least one key byte.
    pub fn parse(s: &str) -> Option<WebhookSecret> {
        let b64 = s.strip_prefix("whsec_")?;
        let bytes = STANDARD.decode(b64).ok()?;
        (!bytes.is_empty()).then_some(WebhookSecret(bytes))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

/// Never prints the key.
impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whsec_base64_with_key_bytes_is_a_secret() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(s.map(|s| s.key().len()), Some(24));
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(WebhookSecret::parse("whsec_!!!").is_none());
        assert!(WebhookSecret::parse("whsec_").is_none());
        let shown = format!("{:?}", WebhookSecret::parse("whsec_AAAA"));
        assert!(!shown.contains("AAAA"), "{shown}");
    }
}
