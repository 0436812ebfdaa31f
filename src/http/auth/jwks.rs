//! An issuer's signing keys (JWKS), cached: read once (from `jwks_uri`, or the one OpenID
//! discovery names), then again only when a token names a `kid` the cache lacks — at most once
//! per `jwks_min_refresh_secs` (a minute) whatever the tokens say, so a flood of made-up `kid`s costs the provider
//! one request a minute — or when the cache is older than `MAX_AGE`. Bounded: the documents
//! read (`MAX_DOCUMENT_BYTES`), the keys kept (`MAX_KEYS`); a key of a type no allowed
//! algorithm uses (an `oct` HMAC secret above all) is never kept.

use crate::configuration::IssuerSettings;
use crate::domain::{AuthFailure, JwtAlgorithm};
use crate::metrics::Metrics;
use futures::StreamExt;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// After a failed read, the next may come sooner than `MIN_REFRESH`.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Keys are read again, on the next token, once this old.
const MAX_AGE: Duration = Duration::from_secs(3600);
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 64;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A usable key: its JWK type and algorithm (when the JWK names one), and the key.
struct Key {
    kty: String,
    alg: Option<String>,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Key>,
    /// When keys were last read successfully.
    fetched: Option<Instant>,
    /// When a read was last tried, and whether it failed.
    tried: Option<(Instant, bool)>,
    /// The JWKS address found by discovery.
    jwks_uri: Option<String>,
}

pub struct Jwks {
    issuer: String,
    /// The least time between two reads on account of unknown `kid`s.
    min_refresh: Duration,
    configured_uri: Option<String>,
    allowed_types: Vec<&'static str>,
    http: reqwest::Client,
    metrics: Metrics,
    cache: RwLock<Cache>,
    /// One read at a time; others wait for it and use its keys.
    refreshing: Mutex<()>,
}

impl Jwks {
    pub fn new(settings: &IssuerSettings, http: reqwest::Client, metrics: Metrics) -> Jwks {
        let mut allowed_types: Vec<&'static str> = settings
            .algorithms
            .iter()
            .map(|a| super::jwt::key_type(*a))
            .collect();
        allowed_types.dedup();
        Jwks {
            issuer: settings.issuer.trim_end_matches('/').to_owned(),
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            configured_uri: settings.jwks_uri.clone(),
            allowed_types,
            http,
            metrics,
            cache: RwLock::new(Cache::default()),
            refreshing: Mutex::new(()),
        }
    }

    /// The key for `kid` (or the only key, when the token names none) for algorithm `alg`.
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: JwtAlgorithm,
    ) -> Result<DecodingKey, AuthFailure> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched.is_some_and(|t| t.elapsed() < MAX_AGE);
            if fresh && let Some(k) = pick(&cache.keys, kid, alg)? {
                return Ok(k);
            }
        }
        let _one = self.refreshing.lock().await;
        {
            // Another request may have read the keys while this one waited.
            let cache = self.cache.read().await;
            if let Some(k) = pick(&cache.keys, kid, alg)?
                && cache.fetched.is_some_and(|t| t.elapsed() < MAX_AGE)
            {
                return Ok(k);
            }
            let may_read = match cache.tried {
                None => true,
                Some((at, failed)) => {
                    let wait = if failed {
                        RETRY_AFTER_FAILURE.min(self.min_refresh)
                    } else {
                        self.min_refresh
                    };
                    at.elapsed() >= wait || cache.fetched.is_none_or(|t| t.elapsed() >= MAX_AGE)
                }
            };
            if !may_read {
                return match pick(&cache.keys, kid, alg)? {
                    Some(k) => Ok(k),
                    None if cache.fetched.is_none() => Err(AuthFailure::JwksUnavailable),
                    None => Err(AuthFailure::UnknownKid),
                };
            }
        }
        let read = self.read().await;
        let mut cache = self.cache.write().await;
        match read {
            Ok((uri, keys)) => {
                self.metrics
                    .auth_jwks_fetches_total
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "read the issuer's signing keys (JWKS)");
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                cache.tried = Some((Instant::now(), false));
                cache.jwks_uri = Some(uri);
            }
            Err(e) => {
                self.metrics
                    .auth_jwks_fetches_total
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot read the issuer's signing keys (JWKS); the keys cached stay");
                cache.tried = Some((Instant::now(), true));
            }
        }
        match pick(&cache.keys, kid, alg)? {
            Some(k) => Ok(k),
            None if cache.fetched.is_none() => Err(AuthFailure::JwksUnavailable),
            None => Err(AuthFailure::UnknownKid),
        }
    }

    /// Discovery (when no `jwks_uri` is configured nor known yet), then the JWKS.
    async fn read(&self) -> Result<(String, HashMap<String, Key>), String> {
        let known = self.cache.read().await.jwks_uri.clone();
        let uri = match self.configured_uri.clone().or(known) {
            Some(u) => u,
            None => self.discover().await?,
        };
        let doc = self.get_json(&uri).await?;
        Ok((uri, keys_of(&doc, &self.allowed_types)))
    }

    async fn discover(&self) -> Result<String, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let doc = self.get_json(&url).await?;
        let issuer = doc["issuer"].as_str().unwrap_or_default();
        if issuer.trim_end_matches('/') != self.issuer {
            return Err(format!(
                "discovery names the issuer `{issuer}`, not the configured one"
            ));
        }
        let uri = doc["jwks_uri"]
            .as_str()
            .ok_or("discovery names no jwks_uri")?;
        match reqwest::Url::parse(uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(uri.to_owned()),
            _ => Err("discovery's jwks_uri is not an http(s) URL".into()),
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        fetch_json(&self.http, url).await
    }
}

/// A JSON object from `url`, at most `MAX_DOCUMENT_BYTES`, within `FETCH_TIMEOUT` (errors
/// without the URL).
pub async fn fetch_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let read = async {
        let resp = http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        json_body(resp).await
    };
    tokio::time::timeout(FETCH_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))?
}

/// A successful answer's body as a JSON object, at most `MAX_DOCUMENT_BYTES`.
pub async fn json_body(resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.without_url().to_string())?;
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("a document larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err("not a JSON object".to_owned()),
    }
}

/// The usable keys of a JWKS document, by `kid`: signing keys (`use` absent or `sig`) of a
/// type an allowed algorithm uses, with a `kid`, at most `MAX_KEYS`. Pure.
fn keys_of(doc: &Value, allowed_types: &[&str]) -> HashMap<String, Key> {
    let mut keys = HashMap::new();
    for jwk in doc["keys"].as_array().into_iter().flatten() {
        if keys.len() >= MAX_KEYS {
            break;
        }
        let kty = jwk["kty"].as_str().unwrap_or_default();
        if !allowed_types.contains(&kty) || kty == "oct" {
            continue;
        }
        if !matches!(jwk["use"].as_str(), None | Some("sig")) {
            continue;
        }
        let Some(kid) = jwk["kid"].as_str().filter(|k| k.len() <= 256) else {
            continue;
        };
        let Ok(parsed) = serde_json::from_value::<Jwk>(jwk.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&parsed) else {
            continue;
        };
        keys.insert(
            kid.to_owned(),
            Key {
                kty: kty.to_owned(),
                alg: jwk["alg"].as_str().map(str::to_owned),
                key,
            },
        );
    }
    keys
}

/// The key for `kid` usable with `alg`: its type must be the algorithm's, and its `alg`, when
/// it names one, the same. With no `kid`, the one key there is. `Ok(None)`: not in the cache.
fn pick(
    keys: &HashMap<String, Key>,
    kid: Option<&str>,
    alg: JwtAlgorithm,
) -> Result<Option<DecodingKey>, AuthFailure> {
    let key = match kid {
        Some(kid) => keys.get(kid),
        None if keys.len() == 1 => keys.values().next(),
        None => None,
    };
    let Some(key) = key else {
        return Ok(None);
    };
    if key.kty != super::jwt::key_type(alg) || key.alg.as_deref().is_some_and(|a| a != alg.as_str())
    {
        return Err(AuthFailure::Algorithm);
    }
    Ok(Some(key.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_signing_keys_of_allowed_types_are_kept() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        ]});
        let keys = keys_of(&doc, &["RSA"]);
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key("r1"));
        assert!(pick(&keys, Some("r1"), JwtAlgorithm::Rs256).is_ok_and(|k| k.is_some()));
        assert_eq!(
            pick(&keys, Some("r1"), JwtAlgorithm::Es256).err(),
            Some(AuthFailure::Algorithm)
        );
        assert!(pick(&keys, Some("zz"), JwtAlgorithm::Rs256).is_ok_and(|k| k.is_none()));
        assert!(pick(&keys, None, JwtAlgorithm::Rs256).is_ok_and(|k| k.is_some()));
    }
}
