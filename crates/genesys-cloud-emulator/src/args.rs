//! The emulator's flags (`rolesync emulator --help`) and the two server profiles it can play.

use std::net::SocketAddr;

/// Flags of the emulator (`rolesync emulator`, or `EmulatorArgs::default()` in Rust).
#[derive(clap::Args, Clone, Debug)]
pub struct EmulatorArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub bind: SocketAddr,
    #[arg(long, default_value = "rolesync-dev")]
    pub client_id: String,
    #[arg(long, default_value = "rolesync-dev-secret")]
    pub client_secret: String,
    /// More OAuth clients besides `--client-id`/`--client-secret` (repeatable): `ID:SECRET`,
    /// split at the first colon.
    #[arg(long = "client", value_name = "ID:SECRET", value_parser = parse_client)]
    pub extra_clients: Vec<(String, String)>,
    /// Seed N users: externalId EMP-000001…, userName emp-000001@example.com, roles [Employee].
    #[arg(long, default_value_t = 0)]
    pub users: u64,
    /// Requests per minute per token; 0 turns the limit off.
    #[arg(long, default_value_t = 300)]
    pub rate_limit_per_minute: u64,
    #[arg(long, default_value_t = 86_400)]
    pub token_ttl_secs: u64,
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Probability (0..1) that an API call answers 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Probability (0..1) that an API call answers 429.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value_t = Profile::Genesys)]
    pub profile: Profile,
    /// Role catalog served by `GET /api/v2/authorization/roles` (JSON); the built-in one
    /// matches `config/policy.toml`.
    #[arg(long)]
    pub roles_file: Option<std::path::PathBuf>,
    /// Random extra latency, 0..=N ms, added to every API call.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Probability (0..1) that the server closes the connection of an API call without answering.
    #[arg(long, default_value_t = 0.0)]
    pub drop_connection: f64,
    /// Most subject ids one bulk grant call takes (`POST /api/v2/authorization/roles/{id}`
    /// `subjectIds`, `PUT …/users/remove`); more answers 400. Genesys publishes no cap.
    #[arg(long, default_value_t = 500)]
    pub bulk_max_subjects: usize,
    /// Largest `pageSize` of `GET /api/v2/authorization/divisions/{id}/grants` (Genesys: 500);
    /// more answers 400.
    #[arg(long, default_value_t = 500)]
    pub grant_page_size_max: usize,
}

impl Default for EmulatorArgs {
    fn default() -> Self {
        EmulatorArgs {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id: "rolesync-dev".into(),
            client_secret: "rolesync-dev-secret".into(),
            extra_clients: Vec::new(),
            users: 0,
            rate_limit_per_minute: 300,
            token_ttl_secs: 86_400,
            latency_ms: 0,
            fault_5xx: 0.0,
            fault_429: 0.0,
            seed: None,
            profile: Profile::Genesys,
            roles_file: None,
            latency_jitter_ms: 0,
            drop_connection: 0.0,
            bulk_max_subjects: 500,
            grant_page_size_max: 500,
        }
    }
}

/// `--client ID:SECRET`: split at the first colon; neither part may be empty.
fn parse_client(value: &str) -> Result<(String, String), String> {
    match value.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok((id.to_owned(), secret.to_owned()))
        }
        _ => Err(format!(
            "'{value}' is not ID:SECRET (a client id, a colon, then a secret; neither empty)"
        )),
    }
}

/// Every client id is non-empty, has no colon (HTTP Basic could not carry it), and is given
/// once (`--client-id` included); every secret is non-empty.
pub(crate) fn check_clients(args: &EmulatorArgs) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let all = std::iter::once((&args.client_id, &args.client_secret))
        .chain(args.extra_clients.iter().map(|(i, s)| (i, s)));
    for (id, secret) in all {
        if id.is_empty() || id.contains(':') {
            anyhow::bail!("client id '{id}' must be non-empty and hold no colon");
        }
        if secret.is_empty() {
            anyhow::bail!("client '{id}' needs a non-empty secret");
        }
        if !seen.insert(id.as_str()) {
            anyhow::bail!("client id '{id}' is given twice");
        }
    }
    Ok(())
}

/// Which server the emulator behaves like.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Genesys Cloud: strong `"n"` ETags, 409 on a stale If-Match, PATCH answers 200 with the user.
    #[default]
    Genesys,
    /// Plain RFC 7644: weak `W/"n"` ETags, 412 on a stale If-Match, PATCH may answer 204.
    Rfc7644,
}

impl Profile {
    /// `filter.maxResults` of the ServiceProviderConfig, and the page size a list is capped at.
    pub fn max_results(self) -> usize {
        match self {
            Profile::Genesys => 100,
            Profile::Rfc7644 => 200,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn client_flags_are_repeatable_and_checked() {
        let cli = Cli::try_parse_from(["x", "--client", "a:s:1", "--client", "b:t"]).unwrap();
        assert_eq!(
            cli.args.extra_clients,
            [("a".into(), "s:1".into()), ("b".into(), "t".into())]
        );
        check_clients(&cli.args).unwrap();
        assert!(
            Cli::try_parse_from(["x"])
                .unwrap()
                .args
                .extra_clients
                .is_empty()
        );
        for bad in ["nocolon", ":secret", "id:", ""] {
            let e = Cli::try_parse_from(["x", "--client", bad]).unwrap_err();
            assert!(e.to_string().contains("is not ID:SECRET"), "{bad}: {e}");
        }
        let twice = Cli::try_parse_from(["x", "--client", "rolesync-dev:other"]).unwrap();
        let e = check_clients(&twice.args).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }
}
