//! Closed vocabularies: every set of words the API, the store, the configuration or a webhook
//! uses is an enum here, spelt once. `vocabulary!` gives each its wire form (`as_str`, serde,
//! `Display`), the list of its values (`ALL`), a parser that names the accepted words, and its
//! schema in the OpenAPI document (a string enum of the same words).

/// Declares an enum whose values are written as the given strings everywhere.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The accepted words, for error messages: `a, b, c`.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                $name::parse(s).ok_or_else(|| {
                    format!("unknown value `{s}` (expected one of: {})", $name::expected())
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// In the OpenAPI document: a string, one of the words.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// What an API key may do (`auth.keys.scopes`).
    pub enum Scope {
        JobsWrite = "jobs:write",
        JobsRead = "jobs:read",
        /// Submit jobs that grant the policy's privileged roles without waiting for approval.
        RolesPrivileged = "roles:privileged",
        /// Push Genesys audit events (`POST /v1/events/genesys`, from Amazon EventBridge).
        EventsWrite = "events:write",
        /// Implies every other scope.
        Admin = "admin",
    }
}

vocabulary! {
    /// Where drift is looked for between scans (`drift.source`).
    #[derive(Default)]
    pub enum DriftSource {
        /// Only the scheduled reconcile of `[reconcile]` (a full scan).
        #[default]
        Scan = "scan",
        /// Genesys' audit trail, polled every `drift.poll_secs`, with the scan as a backstop.
        Audit = "audit",
    }
}

vocabulary! {
    /// What one poll of the drift feed came to (`rolesync_drift_polls_total`).
    pub enum DriftPollResult {
        /// Read and handled; the checkpoint moved.
        Ok = "ok",
        /// Fell back to a full scan (`rolesync_drift_fallback_scans_total` says why).
        Fallback = "fallback",
        /// Failed before it was committed (a read back or the store): tried again next poll.
        Error = "error",
        /// Another replica took the feed's lease meanwhile: nothing was stored.
        LeaseLost = "lease_lost",
        /// A reconcile was open, so its fix (or scan) could not start: tried again next poll.
        ReconcileRunning = "reconcile_running",
        /// The feed could not be read, and the backoff since the last fallback scan has not
        /// passed: no scan started, the checkpoint stays.
        FallbackDeferred = "fallback_deferred",
    }
}

vocabulary! {
    /// Why the drift feed fell back to a full scan (`rolesync_drift_fallback_scans_total`).
    pub enum DriftFallback {
        /// The audit query failed (refused, unreachable, or an async query that did not succeed).
        FeedFailed = "feed_failed",
        /// More changed users, or messages, than one poll reads: a scan is cheaper.
        TooManyChanges = "too_many_changes",
    }
}

vocabulary! {
    /// What puts a job in `awaiting_approval`.
    pub enum ApprovalReason {
        /// A `replace` job would remove roles from more users than the policy's `[approval]`
        /// bounds allow.
        Removals = "removals",
        /// The job grants privileged roles and its key lacks `roles:privileged`.
        PrivilegedRoles = "privileged_roles",
    }
}

vocabulary! {
    /// The type of an audit event (webhook), and what an endpoint subscribes to
    /// (`webhooks.endpoints.events`).
    pub enum EventType {
        /// A user's roles were written (roles before and after).
        RoleSyncCompleted = "role_sync.completed",
        /// A row was refused by the policy or the ingest; nothing was written.
        RoleSyncRejected = "role_sync.rejected",
        /// A user could not be synced (not found, refused by the target, retries exhausted).
        RoleSyncFailed = "role_sync.failed",
        /// A job reached a terminal status.
        JobFinished = "job.finished",
        /// A reconcile found a user whose roles are not what their desired state implies.
        DriftDetected = "role_sync.drift_detected",
        /// A re-run found that a write an earlier attempt of its job made is now in conflict
        /// (a hand change since broke a separation-of-duties rule, or changed the user under
        /// a revert). The write is recorded `applied`; nothing more is written.
        ConflictDetected = "role_sync.conflict_detected",
    }
}

vocabulary! {
    /// Why a job shows `paused`: work stopped for the whole target and resumes by itself.
    pub enum PausedReason {
        /// Calls failed for the whole target (5xx or timeouts after retries); a probe reopens it.
        TargetUnavailable = "target_unavailable",
        /// The target kept answering 429 beyond the retry budget.
        RateLimited = "rate_limited",
        /// The target refused rolesync's credentials.
        AuthFailed = "auth_failed",
        /// The target answers but refuses most of the job's users; a cool-down, then a retry.
        ErrorRatio = "error_ratio",
    }
}

vocabulary! {
    /// How a job reads its users' current roles (chosen by counting calls).
    pub enum ReadMethod {
        /// One `externalId eq` lookup per user.
        Lookup = "lookup",
        /// One paged scan of the whole directory.
        Scan = "scan",
        /// The home division's grants, 500 a page, for users whose ids are known
        /// (the Authorization path only).
        Grants = "grants",
    }
}

vocabulary! {
    /// Which API writes roles to the target (`target.write_api`; a job's `estimate.write_api`).
    #[derive(Default)]
    pub enum WriteApi {
        /// One SCIM `PATCH` per changed user, guarded by `If-Match`.
        #[default]
        Scim = "scim",
        /// Genesys' Authorization API: one grant call per role per chunk of users
        /// (`POST /api/v2/authorization/roles/{roleId}`), one `users/remove` per role per chunk.
        Authorization = "authorization",
    }
}

vocabulary! {
    /// How one SCIM call ended, after its retries (`rolesync_scim_calls_total{outcome}`).
    pub enum ScimCallOutcome {
        /// A 2xx answer.
        Ok = "ok",
        /// A stale version (409, 412, or 400 `invalidVers`): the caller re-reads.
        Conflict = "conflict",
        /// 404.
        NotFound = "not_found",
        /// Another 4xx: the target refused this request.
        Rejected = "rejected",
        /// 403: the OAuth client lacks a permission.
        Forbidden = "forbidden",
        /// The credentials were refused.
        AuthFailed = "auth_failed",
        /// 5xx, 408, time-outs or connection errors outlived the retries.
        Unavailable = "unavailable",
        /// 429s outlived the retry budget.
        RateLimited = "rate_limited",
        /// The answer could not be understood.
        Protocol = "protocol",
        /// Not sent: the work it was for was stopped (a cancel, a 403 on a sibling call).
        Stopped = "stopped",
    }
}

vocabulary! {
    /// Why a SCIM call was sent again (`rolesync_scim_retries_total{reason}`).
    pub enum ScimRetryReason {
        /// A 401 with a token the target no longer accepts: a new token, one resend.
        Unauthorized = "unauthorized",
        /// A 429: the wait the target named, without using up an attempt.
        RateLimited = "rate_limited",
        /// 5xx, 408, a time-out or a connection error: backoff with jitter.
        Transient = "transient",
    }
}

vocabulary! {
    /// Where a webhook delivery stands (`GET /v1/webhooks/deliveries?status=`).
    pub enum DeliveryStatus {
        /// Not delivered yet; retried on its schedule.
        Pending = "pending",
        Delivered = "delivered",
        /// The retries ran out; `POST …/redeliver` sends it again.
        Dead = "dead",
    }
}

vocabulary! {
    /// The shape of log lines (`log.format`).
    #[derive(Default)]
    pub enum LogFormat {
        /// One JSON object per line (containers, log shippers).
        Json = "json",
        /// Human-readable lines (a terminal).
        #[default]
        Pretty = "pretty",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_word_and_serde() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(*s));
            let json = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Scope>(&json).ok(), Some(*s));
        }
        for e in EventType::ALL {
            assert_eq!(e.as_str().parse::<EventType>(), Ok(*e));
        }
        for p in PausedReason::ALL {
            assert_eq!(PausedReason::parse(p.as_str()), Some(*p));
        }
    }

    #[test]
    fn an_unknown_word_is_refused_with_the_accepted_ones() {
        let err = serde_json::from_str::<Scope>("\"jobs:delete\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("jobs:delete")
                && err.contains("jobs:write, jobs:read, roles:privileged, events:write, admin"),
            "{err}"
        );
        assert_eq!(LogFormat::parse("xml"), None);
    }
}

vocabulary! {
    /// What one check of `rolesync doctor` (`GET /v1/target/check`) found.
    pub enum CheckStatus {
        /// ✔ the target does what rolesync needs.
        Pass = "pass",
        /// ✘ it does not; the check's `fix` says what to change.
        Fail = "fail",
        /// ? reads cannot tell (a write permission), or an earlier failure kept the check from
        /// being made.
        Unknown = "unknown",
    }
}

vocabulary! {
    /// The checks of `rolesync doctor`, in the order they are reported.
    pub enum CheckId {
        /// An OAuth token is granted with the configured client, and for how long.
        Token = "token",
        /// SCIM answers; `ServiceProviderConfig`: page size, ETag support.
        Scim = "scim",
        /// Every role of the policy exists in the org by its exact name.
        PolicyRoles = "policy_roles",
        /// The org's roles the policy does not manage (informational).
        UnmanagedRoles = "unmanaged_roles",
        /// The org's home division (where the Authorization path grants).
        HomeDivision = "home_division",
        /// The read permissions the enabled paths need, as the reads' answers tell.
        ReadPermissions = "read_permissions",
        /// The write permissions, which no read can tell: always unknown.
        WritePermissions = "write_permissions",
        /// `inin-ratelimit-allowed` is sent, and `target.requests_per_minute` stays under it.
        RateLimit = "rate_limit",
        /// This host's clock against the target's `Date` header.
        Clock = "clock",
    }
}

vocabulary! {
    /// A signature algorithm a bearer token may use (`auth.issuers.algorithms`): asymmetric
    /// ones only, so neither `none` nor an HMAC (whose key a public key could be passed off as)
    /// can even be configured.
    pub enum JwtAlgorithm {
        Rs256 = "RS256",
        Rs384 = "RS384",
        Rs512 = "RS512",
        Ps256 = "PS256",
        Ps384 = "PS384",
        Ps512 = "PS512",
        Es256 = "ES256",
        Es384 = "ES384",
        EdDsa = "EdDSA",
    }
}

vocabulary! {
    /// A token claim rolesync reads scopes from (`auth.issuers.grants.claim`).
    pub enum TokenClaim {
        /// OAuth's space-separated `scope` (Okta, most providers).
        Scope = "scope",
        /// Entra ID's delegated scopes, space-separated.
        Scp = "scp",
        /// App roles (Entra ID), or any array of role names.
        Roles = "roles",
        /// Group names or ids.
        Groups = "groups",
    }
}

vocabulary! {
    /// Why an authentication failed (`rolesync_auth_failures_total{reason}`). Never more than
    /// a word: the token or key itself is never recorded.
    pub enum AuthFailure {
        /// No `Authorization: Bearer …` (or no console cookie).
        Missing = "missing",
        /// Not a configured API key, and not a token either.
        UnknownKey = "unknown_key",
        /// Not a JWS rolesync can read (header or payload not base64url JSON, too long).
        Malformed = "malformed",
        /// An algorithm not allowed for the issuer (`none` and HMACs never are).
        Algorithm = "algorithm",
        /// No configured issuer has this `iss`.
        Issuer = "issuer",
        /// No key of the issuer's JWKS has this `kid`, even after a refresh.
        UnknownKid = "unknown_kid",
        /// The signature does not verify.
        Signature = "signature",
        /// `aud` is not the issuer's audience.
        Audience = "audience",
        /// `exp` is past (beyond the leeway).
        Expired = "expired",
        /// `nbf` is in the future (beyond the leeway).
        NotYetValid = "not_yet_valid",
        /// A required claim (`sub`, `exp`, `iss`, `aud`) is missing or not of its type.
        Claims = "claims",
        /// The issuer's JWKS could not be read.
        JwksUnavailable = "jwks_unavailable",
        /// A console session cookie that does not open, or has expired.
        Session = "session",
    }
}

vocabulary! {
    /// Who a principal is: an API key, a bearer token, a console session, or rolesync itself.
    pub enum PrincipalKind {
        ApiKey = "api_key",
        Token = "token",
        Session = "session",
        /// rolesync's own schedule (`reconcile.schedule`).
        System = "system",
    }
}
