//! Bearer tokens (JWT) as pure decisions, no I/O: what a token claims to be before it is
//! trusted (`peek`: its algorithm, key id and issuer, only to choose the keys that will check
//! it), its verification with a given key (`verify`, by `jsonwebtoken`), and what a verified
//! token grants (`scopes_of`, `principal_of`).
//!
//! Why `jsonwebtoken`: the most used JWT crate, signatures by aws-lc-rs (the crypto rustls
//! already runs on here), and claim checks (`exp`, `nbf`, `iss`, `aud`, leeway) built in; the
//! JWKS and its refresh are rolesync's own (`jwks.rs`), small and bounded, where a bigger OIDC
//! client would bring its own HTTP stack and cache. The algorithm is never taken on the token's
//! word: it must be one the issuer's `algorithms` allow (asymmetric only, so `none` and HMACs
//! are refused before any key is looked at), and the key's type must match it.

use crate::configuration::IssuerSettings;
use crate::domain::{AuthFailure, JwtAlgorithm, Principal, PrincipalKind, Scope, TokenClaim};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The longest token read (a real access token is 1 to 4 KiB); a longer one is refused
/// unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The longest `kid` looked up.
const MAX_KID_BYTES: usize = 256;

/// What a token says of itself, unverified: used only to pick the issuer and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: String,
}

/// Whether the presented credential has the shape of a JWS (three base64url parts); else it is
/// taken for an API key.
pub fn looks_like_jwt(presented: &str) -> bool {
    presented.len() <= MAX_TOKEN_BYTES
        && presented.split('.').count() == 3
        && presented.starts_with("eyJ")
}

fn segment_json(segment: &str) -> Result<Value, AuthFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthFailure::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(AuthFailure::Malformed),
    }
}

/// Reads the header's `alg` and `kid` and the payload's `iss`, unverified.
pub fn peek(token: &str) -> Result<Peeked, AuthFailure> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let header = segment_json(h)?;
    let payload = segment_json(p)?;
    let alg = header["alg"]
        .as_str()
        .ok_or(AuthFailure::Malformed)?
        .to_owned();
    let kid = match &header["kid"] {
        Value::Null => None,
        Value::String(k) if k.len() <= MAX_KID_BYTES => Some(k.clone()),
        _ => return Err(AuthFailure::Malformed),
    };
    let iss = payload["iss"]
        .as_str()
        .ok_or(AuthFailure::Claims)?
        .to_owned();
    Ok(Peeked { alg, kid, iss })
}

/// The `jsonwebtoken` algorithm of a configured one.
pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Rs384 => Algorithm::RS384,
        JwtAlgorithm::Rs512 => Algorithm::RS512,
        JwtAlgorithm::Ps256 => Algorithm::PS256,
        JwtAlgorithm::Ps384 => Algorithm::PS384,
        JwtAlgorithm::Ps512 => Algorithm::PS512,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::Es384 => Algorithm::ES384,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// The JWK key type (`kty`) an algorithm's keys have.
pub fn key_type(a: JwtAlgorithm) -> &'static str {
    match a {
        JwtAlgorithm::Rs256
        | JwtAlgorithm::Rs384
        | JwtAlgorithm::Rs512
        | JwtAlgorithm::Ps256
        | JwtAlgorithm::Ps384
        | JwtAlgorithm::Ps512 => "RSA",
        JwtAlgorithm::Es256 | JwtAlgorithm::Es384 => "EC",
        JwtAlgorithm::EdDsa => "OKP",
    }
}

/// The token's algorithm, if the issuer allows it: `none`, any HMAC and anything not listed
/// are refused here, before a key is chosen.
pub fn allowed_algorithm(
    peeked: &Peeked,
    allowed: &[JwtAlgorithm],
) -> Result<JwtAlgorithm, AuthFailure> {
    JwtAlgorithm::parse(&peeked.alg)
        .filter(|a| allowed.contains(a))
        .ok_or(AuthFailure::Algorithm)
}

/// Verifies the signature with `key` (of algorithm `alg`) and the claims: `iss` is the
/// issuer, `aud` contains the audience, `exp` (required) and `nbf` (when present) hold within
/// the leeway, `sub` is present. Returns the claims.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    alg: JwtAlgorithm,
    issuer: &IssuerSettings,
) -> Result<Value, AuthFailure> {
    let mut v = Validation::new(algorithm(alg));
    v.algorithms = vec![algorithm(alg)];
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&[&issuer.audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = issuer.leeway_secs;
    match jsonwebtoken::decode::<Value>(token, key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(classify(e.kind())),
    }
}

fn classify(kind: &jsonwebtoken::errors::ErrorKind) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthFailure::Signature,
        K::ExpiredSignature => AuthFailure::Expired,
        K::ImmatureSignature => AuthFailure::NotYetValid,
        K::InvalidAudience => AuthFailure::Audience,
        K::InvalidIssuer => AuthFailure::Issuer,
        K::MissingRequiredClaim(_) | K::InvalidSubject => AuthFailure::Claims,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            AuthFailure::Algorithm
        }
        K::InvalidKeyFormat | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => AuthFailure::Signature,
        _ => AuthFailure::Malformed,
    }
}

/// The values of a claim: a list of strings, or a space-separated string (`scope`, `scp`).
fn claim_values(claims: &Value, claim: TokenClaim) -> Vec<&str> {
    match &claims[claim.as_str()] {
        Value::String(s) => s.split_ascii_whitespace().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The scopes a verified token's claims grant under the issuer's `grants`, deduplicated.
pub fn scopes_of(claims: &Value, issuer: &IssuerSettings) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = Vec::new();
    for grant in &issuer.grants {
        if claim_values(claims, grant.claim).contains(&grant.value.as_str()) {
            for s in &grant.scopes {
                if !scopes.contains(s) {
                    scopes.push(*s);
                }
            }
        }
    }
    scopes
}

/// Who a verified token stands for: its issuer and subject, and a display name (the
/// configured `name_claim`, else `name`, `client_id`, `azp`, then `sub`).
pub fn principal_of(claims: &Value, issuer: &IssuerSettings, kind: PrincipalKind) -> Principal {
    let sub = claims["sub"].as_str().unwrap_or_default();
    let name = issuer
        .name_claim
        .as_deref()
        .into_iter()
        .chain(["name", "client_id", "azp"])
        .find_map(|c| claims[c].as_str().filter(|s| !s.is_empty()))
        .unwrap_or(sub);
    Principal::token(kind, &issuer.issuer, sub, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::IssuerGrant;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn issuer() -> IssuerSettings {
        IssuerSettings {
            issuer: "https://idp.example".into(),
            audience: "rolesync".into(),
            jwks_uri: None,
            algorithms: vec![JwtAlgorithm::Rs256],
            leeway_secs: 60,
            jwks_min_refresh_secs: 60,
            name_claim: None,
            grants: vec![
                IssuerGrant {
                    claim: TokenClaim::Roles,
                    value: "rolesync.writer".into(),
                    scopes: vec![Scope::JobsWrite, Scope::JobsRead],
                },
                IssuerGrant {
                    claim: TokenClaim::Scp,
                    value: "Jobs.Read".into(),
                    scopes: vec![Scope::JobsRead],
                },
            ],
        }
    }

    #[test]
    fn peek_reads_alg_kid_and_iss_and_refuses_what_is_not_a_jws() {
        let t = format!(
            "{}.{}.sig",
            b64(&json!({"alg": "RS256", "kid": "k1"})),
            b64(&json!({"iss": "https://idp.example"}))
        );
        assert_eq!(
            peek(&t),
            Ok(Peeked {
                alg: "RS256".into(),
                kid: Some("k1".into()),
                iss: "https://idp.example".into()
            })
        );
        assert_eq!(peek("a.b"), Err(AuthFailure::Malformed));
        assert_eq!(peek("!!.!!.!!"), Err(AuthFailure::Malformed));
        let no_iss = format!("{}.{}.s", b64(&json!({"alg": "RS256"})), b64(&json!({})));
        assert_eq!(peek(&no_iss), Err(AuthFailure::Claims));
        let long = format!("{}.{}.s", "eyJ".repeat(10_000), "x");
        assert_eq!(peek(&long), Err(AuthFailure::Malformed));
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key() {
        let allowed = [JwtAlgorithm::Rs256];
        for alg in ["none", "HS256", "HS512", "ES256", "rs256"] {
            let p = Peeked {
                alg: alg.into(),
                kid: None,
                iss: "x".into(),
            };
            assert_eq!(
                allowed_algorithm(&p, &allowed),
                Err(AuthFailure::Algorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn claims_map_to_scopes_and_a_principal() {
        let i = issuer();
        let claims = json!({"sub": "c1", "client_id": "hr", "roles": ["rolesync.writer"], "scp": "Jobs.Read Other"});
        assert_eq!(
            scopes_of(&claims, &i),
            vec![Scope::JobsWrite, Scope::JobsRead]
        );
        assert_eq!(scopes_of(&json!({"roles": "x"}), &i), vec![]);
        let p = principal_of(&claims, &i, PrincipalKind::Token);
        assert_eq!(p.name, "hr");
        assert_eq!(p.subject.as_deref(), Some("c1"));
        assert_eq!(p.issuer.as_deref(), Some("https://idp.example"));
    }
}
