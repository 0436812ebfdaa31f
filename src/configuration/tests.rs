//! Unit tests of the settings: defaults, and each check naming its key.

use super::*;
use crate::domain::{LogFormat, WriteApi};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn with_webhooks(toml: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml_overrides(toml)
}

fn key_of(r: Result<Settings, ConfigError>) -> &'static str {
    match r {
        Err(ConfigError::Invalid { key, .. }) => key,
        Err(e) => panic!("not a key error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn unknown_words_of_closed_vocabularies_are_refused_naming_the_key() {
    let cases = [
        ("[log]\nformat = \"xml\"\n", "log.format", "`xml`"),
        (
            "[[auth.keys]]\nname = \"k\"\nkey_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nscopes = [\"jobs:read\", \"jobs:delete\"]\n",
            "auth.keys[0]scopes[1]",
            "`jobs:delete`",
        ),
    ];
    for (toml, key, word) in cases {
        let err = with_webhooks(toml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(key) && err.contains(word), "{toml}: {err}");
    }
    let ok = with_webhooks("[log]\nformat = \"json\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.log.format, LogFormat::Json);
}

#[test]
fn error_ratio_settings_have_defaults_and_are_checked() {
    let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.sync.max_error_ratio, 0.5);
    assert_eq!(s.sync.error_ratio_window, 20);
    assert_eq!(s.sync.error_ratio_cooldown_secs, 30);
    assert_eq!(s.sync.error_ratio_cooldown_max_secs, 600);
    assert_eq!(s.sync.error_ratio_max_pauses, 3);
    assert!(with_webhooks("[sync]\nmax_error_ratio = 1.0\n").is_ok());
    for bad in ["0.0", "1.5", "-0.1"] {
        assert_eq!(
            key_of(with_webhooks(&format!("[sync]\nmax_error_ratio = {bad}\n"))),
            "sync.max_error_ratio"
        );
    }
    assert_eq!(
        key_of(with_webhooks("[sync]\nerror_ratio_window = 0\n")),
        "sync.error_ratio_window"
    );
    assert_eq!(
        key_of(with_webhooks(
            "[sync]\nerror_ratio_cooldown_secs = 60\nerror_ratio_cooldown_max_secs = 30\n"
        )),
        "sync.error_ratio_cooldown_max_secs"
    );
}

#[test]
fn telemetry_is_off_by_default_and_its_keys_are_checked() {
    let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.telemetry.enabled());
    assert_eq!(s.telemetry.service_name, "rolesync");
    assert_eq!(s.telemetry.sample_ratio, 1.0);
    let on = with_webhooks(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.25\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(on.telemetry.enabled());
    for (toml, key) in [
        (
            "otlp_endpoint = \"collector:4318\"",
            "telemetry.otlp_endpoint",
        ),
        ("sample_ratio = 1.5", "telemetry.sample_ratio"),
        ("sample_ratio = -0.1", "telemetry.sample_ratio"),
        ("service_name = \" \"", "telemetry.service_name"),
        ("export_timeout_secs = 0", "telemetry.export_timeout_secs"),
        ("export_timeout_secs = 61", "telemetry.export_timeout_secs"),
    ] {
        assert_eq!(
            key_of(with_webhooks(&format!("[telemetry]\n{toml}\n"))),
            key
        );
    }
    assert!(matches!(
        with_webhooks("[telemetry]\notlp_endpont = \"x\"\n"),
        Err(ConfigError::Load(_))
    ));
}

#[test]
fn webhook_settings_have_safe_defaults() {
    let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.webhooks.batch_max_events, 1, "batching is off by default");
    assert_eq!(s.webhooks.concurrency_per_endpoint, 4);
    assert!(s.webhooks.retry_schedule_secs.iter().sum::<u64>() > 3 * 3600);
}

#[test]
fn rotation_secrets_and_batching_are_read_and_checked() {
    let ok = with_webhooks(&format!(
        "[webhooks]\nbatch_max_events = 50\n[[webhooks.endpoints]]\nurl = \"https://h.example/x?token=abc\"\n\
         secret = \"{SECRET}\"\nprevious_secrets = [\"{SECRET}\"]\nevents = [\"job.finished\"]\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let ep = &ok.webhooks.endpoints[0];
    assert_eq!(ep.previous_secrets.len(), 1);
    assert_eq!(ok.webhooks.batch_max_events, 50);
    // The token in the URL stays out of the name used in logs and the API.
    assert_eq!(ep.display_name(), "https://h.example/x");

    let endpoint = |extra: &str| {
        format!(
            "[[webhooks.endpoints]]\nurl = \"https://h.example/\"\nsecret = \"{SECRET}\"\n{extra}\n"
        )
    };
    assert_eq!(
        key_of(with_webhooks(&endpoint("previous_secrets = [\"nope\"]"))),
        "webhooks.endpoints.previous_secrets"
    );
    // A closed vocabulary is refused while reading, naming the key and the accepted words.
    let err = with_webhooks(&endpoint("events = [\"role_sync.done\"]"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("webhooks.endpoints[0]events[0]")
            && err.contains("`role_sync.done`")
            && err.contains("job.finished"),
        "{err}"
    );
    assert_eq!(
        key_of(with_webhooks(&format!("{}{}", endpoint(""), endpoint("")))),
        "webhooks.endpoints.name"
    );
    assert_eq!(
        key_of(with_webhooks("[webhooks]\nbatch_max_events = 0\n")),
        "webhooks.batch_max_events"
    );
    assert_eq!(
        key_of(with_webhooks("[webhooks]\nretry_schedule_secs = [1, 0]\n")),
        "webhooks.retry_schedule_secs"
    );
    assert_eq!(
        key_of(with_webhooks("[webhooks]\ntimeout_secs = 0\n")),
        "webhooks.timeout_secs"
    );
}

#[test]
fn the_authorization_write_api_is_refused_with_the_rfc7644_profile() {
    assert_eq!(
        key_of(Settings::from_toml_overrides(
            "[target]\nprofile = \"rfc7644\"\nwrite_api = \"authorization\"\n"
        )),
        "target.write_api"
    );
    let ok = Settings::from_toml_overrides("[target]\nwrite_api = \"authorization\"\n");
    assert!(ok.is_ok_and(
        |s| s.target.write_api == WriteApi::Authorization && s.target.bulk_max_subjects == 100
    ));
    assert_eq!(
        key_of(Settings::from_toml_overrides(
            "[target]\nbulk_max_subjects = 0\n"
        )),
        "target.bulk_max_subjects"
    );
    let err = Settings::from_toml_overrides("[target]\nwrite_api = \"graph\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("write_api"), "{err}");
}

#[test]
fn the_pending_bound_must_hold_the_largest_job() {
    assert_eq!(
        key_of(Settings::from_toml_overrides(
            "[server]\nmax_rows_per_job = 10\nmax_pending_rows = 9\n"
        )),
        "server.max_pending_rows"
    );
    assert_eq!(
        key_of(Settings::from_toml_overrides(
            "[server]\nmax_rows_per_job = 0\n"
        )),
        "server.max_rows_per_job"
    );
    assert!(
        Settings::from_toml_overrides("[server]\nmax_rows_per_job = 10\nmax_pending_rows = 10\n")
            .is_ok()
    );
}

#[test]
fn the_rate_limit_window_has_a_default_and_is_checked() {
    let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.target.rate_limit_window_secs, 60);
    for bad in ["0", "3601"] {
        assert_eq!(
            key_of(with_webhooks(&format!(
                "[target]\nrate_limit_window_secs = {bad}\n"
            ))),
            "target.rate_limit_window_secs"
        );
    }
    assert!(with_webhooks("[target]\nrate_limit_window_secs = 2\n").is_ok());
}
