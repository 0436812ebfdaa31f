//! Which of the keys that locate and authenticate the target only the built-in defaults set.
//!
//! The compiled-in `[target]` points at a local emulator with published development
//! credentials, so that `demo`, the tests and a laptop run with no file at all. `rolesync serve`
//! must not start on it by accident: a production config that forgets `[target]` would look
//! healthy while nothing reaches Genesys. So `serve` asks the operator's layers alone (the
//! `--config` file and the `ROLESYNC__…` environment; neither the compiled-in defaults nor the
//! working directory's `config/default.toml`, which in a checkout is that same file) whether
//! they name the target's address and one complete set of credentials. Values are not compared
//! with the defaults: a config that names the emulator on purpose (the compose stack) is
//! explicit, and a config that names only `scim_base` still takes the dev secret from the
//! defaults, which is exactly the mix to refuse.

use super::{ConfigError, operator_layers};
use std::path::Path;

/// What to set, for the error `serve` answers with.
pub const TARGET_KEYS_HELP: &str = "set target.scim_base, and either target.token_url, \
     target.client_id and target.client_secret (or target.client_secret_file), or \
     target.bearer_token (or target.bearer_token_file), in the --config file or as \
     ROLESYNC__TARGET__* environment variables";

/// The target keys that no operator layer sets (empty: the target is named explicitly). With
/// a static token (`bearer_token[_file]`) the client-credentials keys are not needed.
pub fn target_keys_from_defaults(file: Option<&Path>) -> Result<Vec<&'static str>, ConfigError> {
    keys_from_defaults(file, None)
}

/// `target_keys_from_defaults` with the environment given as a map (`None`: the process's).
pub(crate) fn keys_from_defaults(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<Vec<&'static str>, ConfigError> {
    let layers = operator_layers(config::Config::builder(), file, env).build()?;
    // An empty value is no value: `ROLESYNC__TARGET__CLIENT_SECRET=` names nothing.
    let set = |key: &str| layers.get_string(key).is_ok_and(|v| !v.trim().is_empty());
    let mut missing = Vec::new();
    if !set("target.scim_base") {
        missing.push("target.scim_base");
    }
    if set("target.bearer_token") || set("target.bearer_token_file") {
        return Ok(missing);
    }
    for key in ["target.token_url", "target.client_id"] {
        if !set(key) {
            missing.push(key);
        }
    }
    if !set("target.client_secret") && !set("target.client_secret_file") {
        missing.push("target.client_secret");
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    const ALL: [&str; 4] = [
        "target.scim_base",
        "target.token_url",
        "target.client_id",
        "target.client_secret",
    ];

    #[test]
    fn nothing_but_the_defaults_names_no_target_key() {
        // Run from the crate root, where config/default.toml exists: it does not count.
        let missing = keys_from_defaults(None, env(&[])).unwrap_or_default();
        assert_eq!(missing, ALL);
        // Keys of other sections are no target.
        let missing = keys_from_defaults(None, env(&[("ROLESYNC__SERVER__BIND", "0.0.0.0:8080")]))
            .unwrap_or_default();
        assert_eq!(missing, ALL);
    }

    #[test]
    fn a_target_named_by_the_environment_alone_is_explicit() {
        let full = [
            (
                "ROLESYNC__TARGET__SCIM_BASE",
                "https://api.example/api/v2/scim/v2",
            ),
            (
                "ROLESYNC__TARGET__TOKEN_URL",
                "https://login.example/oauth/token",
            ),
            ("ROLESYNC__TARGET__CLIENT_ID", "abc"),
            ("ROLESYNC__TARGET__CLIENT_SECRET_FILE", "/run/secrets/s"),
        ];
        assert_eq!(
            keys_from_defaults(None, env(&full)).ok(),
            Some(Vec::<&str>::new())
        );
        let bearer = [
            (
                "ROLESYNC__TARGET__SCIM_BASE",
                "https://api.example/api/v2/scim/v2",
            ),
            ("ROLESYNC__TARGET__BEARER_TOKEN", "t"),
        ];
        assert_eq!(
            keys_from_defaults(None, env(&bearer)).ok(),
            Some(Vec::<&str>::new())
        );
        // The address alone: the dev credentials would still come from the defaults.
        assert_eq!(
            keys_from_defaults(None, env(&full[..1])).ok(),
            Some(ALL[1..].to_vec())
        );
        // Credentials alone: the emulator's address would still come from the defaults.
        assert_eq!(
            keys_from_defaults(None, env(&full[1..])).ok(),
            Some(vec!["target.scim_base"])
        );
        // An empty value names nothing.
        let mut empty = full;
        empty[3] = ("ROLESYNC__TARGET__CLIENT_SECRET_FILE", "");
        assert_eq!(
            keys_from_defaults(None, env(&empty)).ok(),
            Some(vec!["target.client_secret"])
        );
    }

    #[test]
    fn a_file_and_the_environment_add_up() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("site.toml");
        std::fs::write(
            &path,
            "[target]\nscim_base = \"https://api.example/api/v2/scim/v2\"\nclient_id = \"abc\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            keys_from_defaults(Some(&path), env(&[])).ok(),
            Some(vec!["target.token_url", "target.client_secret"])
        );
        let rest = [
            (
                "ROLESYNC__TARGET__TOKEN_URL",
                "https://login.example/oauth/token",
            ),
            ("ROLESYNC__TARGET__CLIENT_SECRET", "s"),
        ];
        assert_eq!(
            keys_from_defaults(Some(&path), env(&rest)).ok(),
            Some(Vec::<&str>::new())
        );
    }
}
