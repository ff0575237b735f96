//! Layering and validation, each case inside a `figment::Jail` so that environment changes
//! stay inside the test.
#![allow(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error, whose size is figment's choice"
)]

use figment::Jail;

use super::*;

fn load_in(jail: &Jail, config: Option<&str>) -> Result<Settings, SettingsError> {
    let _ = jail;
    Settings::load(config.map(Path::new))
}

#[test]
fn defaults_run_locally_on_port_3000_with_the_seed_origins() {
    Jail::expect_with(|jail| {
        let settings = load_in(jail, None).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.listen_addr(), "0.0.0.0:3000".parse().unwrap());
        assert_eq!(settings.cors.allowed_origins.len(), 4);
        Ok(())
    });
}

#[test]
fn each_layer_overrides_the_one_before() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "aimcs.toml",
            "[server]\nport = 4000\n[log]\nformat = \"json\"\n",
        )?;
        assert_eq!(load_in(jail, Some("aimcs.toml")).unwrap().server.port, 4000);

        jail.set_env("PORT", "5000");
        assert_eq!(
            load_in(jail, Some("aimcs.toml")).unwrap().server.port,
            5000,
            "PORT beats the file"
        );

        jail.set_env("APP_SERVER__PORT", "6000");
        let settings = load_in(jail, Some("aimcs.toml")).unwrap();
        assert_eq!(settings.server.port, 6000, "APP_* beats PORT");
        assert_eq!(
            settings.log.format,
            LogFormat::Json,
            "the file's other values stay"
        );
        Ok(())
    });
}

#[test]
fn the_config_file_can_be_named_by_app_config() {
    Jail::expect_with(|jail| {
        jail.create_file("other.toml", "environment = \"staging\"\n")?;
        jail.set_env("APP_CONFIG", "other.toml");
        assert_eq!(load_in(jail, None).unwrap().environment, "staging");
        Ok(())
    });
}

#[test]
fn node_env_still_names_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env("NODE_ENV", "production");
        assert_eq!(load_in(jail, None).unwrap().environment, "production");
        jail.set_env("APP_ENVIRONMENT", "staging");
        assert_eq!(load_in(jail, None).unwrap().environment, "staging");
        Ok(())
    });
}

#[test]
fn origins_can_be_set_as_a_list_in_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "APP_CORS__ALLOWED_ORIGINS",
            r#"["https://a.example","http://localhost:8080"]"#,
        );
        let origins: Vec<String> = load_in(jail, None)
            .unwrap()
            .cors
            .allowed_origins
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(origins, ["https://a.example", "http://localhost:8080"]);
        Ok(())
    });
}

fn error_in(jail: &Jail, config: Option<&str>) -> String {
    load_in(jail, config).unwrap_err().to_string()
}

#[test]
fn a_bad_port_names_the_setting_and_the_variable_it_came_from() {
    Jail::expect_with(|jail| {
        jail.set_env("PORT", "abc");
        let error = error_in(jail, None);
        assert_eq!(
            error,
            "invalid setting `server.port`: invalid type: found string \"abc\", expected u16 (from environment variable PORT)"
        );
        Ok(())
    });
}

#[test]
fn a_bad_origin_names_the_setting_and_the_file_it_came_from() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            "[cors]\nallowed_origins = [\"https://ok.example\", \"aimcs.net/app\"]\n",
        )?;
        let error = error_in(jail, Some("bad.toml"));
        assert!(
            error.starts_with(
                "invalid setting `cors.allowed_origins.1`: \"aimcs.net/app\" is not an origin"
            ),
            "{error}"
        );
        assert!(error.ends_with("bad.toml)"), "{error}");
        Ok(())
    });
}

#[test]
fn out_of_range_and_misspelt_values_are_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("APP_WS__MAX_MESSAGE_BYTES", "10");
        assert!(error_in(jail, None).contains("out of range"));
        jail.set_env("APP_WS__MAX_MESSAGE_BYTES", "65536");

        jail.set_env("APP_LOG__FORMAT", "xml");
        let error = error_in(jail, None);
        assert!(
            error.starts_with("invalid setting `log.format`: unknown variant"),
            "{error}"
        );
        assert!(
            error.ends_with("(from environment variable APP_LOG__FORMAT)"),
            "{error}"
        );
        jail.set_env("APP_LOG__FORMAT", "json");

        for typo in ["inf", "loud=", "info,aimcs=verbose"] {
            jail.set_env("APP_LOG__LEVEL", typo);
            assert!(
                error_in(jail, None).contains("is not a log level"),
                "{typo}"
            );
        }
        jail.set_env("APP_LOG__LEVEL", "warn,aimcs_adapters=debug");
        assert_eq!(
            load_in(jail, None).unwrap().log.level.as_str(),
            "warn,aimcs_adapters=debug"
        );

        jail.set_env("APP_SERVER__SHUTDOWN_GRACE_SECS", "0");
        assert!(error_in(jail, None).contains("at least 1 second"));
        jail.set_env("APP_SERVER__SHUTDOWN_GRACE_SECS", "5");

        jail.set_env("APP_SERVER__PORTT", "8080");
        let error = error_in(jail, None);
        assert!(
            error.starts_with("invalid setting `server.portt`: unknown field"),
            "{error}"
        );
        assert!(
            error.ends_with("(from environment variable APP_SERVER__PORTT)"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn a_config_file_that_does_not_exist_is_an_error_not_silently_the_defaults() {
    Jail::expect_with(|jail| {
        let error = error_in(jail, Some("missing.toml"));
        assert!(error.starts_with("cannot read configuration: "), "{error}");
        assert!(
            error.ends_with("missing.toml)") && !error.contains('\n'),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn app_variables_that_are_not_settings_are_ignored_and_listed() {
    Jail::expect_with(|jail| {
        // What a Kubernetes Service named `app` injects, and a single-underscore slip.
        jail.set_env("APP_PORT", "tcp://10.0.0.1:80");
        jail.set_env("APP_SERVICE_HOST", "10.0.0.1");
        jail.set_env("APP_SERVER_PORT", "8080");
        assert_eq!(load_in(jail, None).unwrap().server.port, 3000);
        assert_eq!(
            Settings::ignored_variables(),
            ["APP_PORT", "APP_SERVER_PORT", "APP_SERVICE_HOST"]
        );
        Ok(())
    });
}

#[test]
fn settings_become_the_transports_settings() {
    let settings = Settings::default().server_settings(None);
    assert_eq!(settings.http.max_body_bytes, 1024 * 1024);
    assert_eq!(settings.ws.max_message_bytes, 1024 * 1024);
    assert_eq!(settings.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn every_ws_limit_reaches_the_transport() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "limits.toml",
            "[ws]\nmax_connections = 7\nmax_messages_per_second = 9\nburst = 11\nmax_json_depth = 5\n\
             ping_interval_secs = 3\nidle_timeout_secs = 4\nallow_missing_origin = false\n\
             [server]\nmax_connections = 13\ndrain_delay_secs = 2\n",
        )?;
        let ws = load_in(jail, Some("limits.toml"))
            .unwrap()
            .server_settings(None);
        assert_eq!(
            (ws.ws.max_connections, ws.ws.rate, ws.ws.max_json_depth),
            (
                7,
                Some(RateLimit {
                    per_second: 9,
                    burst: 11
                }),
                5
            )
        );
        assert_eq!(
            (
                ws.ws.ping_interval,
                ws.ws.idle_timeout,
                ws.ws.allow_missing_origin
            ),
            (Duration::from_secs(3), Duration::from_secs(4), false)
        );
        assert_eq!(
            (ws.max_connections, ws.drain_delay),
            (13, Duration::from_secs(2))
        );
        Ok(())
    });
}

#[test]
fn a_rate_of_zero_means_no_rate_limit() {
    Jail::expect_with(|jail| {
        jail.set_env("APP_WS__MAX_MESSAGES_PER_SECOND", "0");
        assert_eq!(
            load_in(jail, None).unwrap().server_settings(None).ws.rate,
            None
        );
        Ok(())
    });
}

#[test]
fn the_echo_endpoint_is_refused_in_production() {
    Jail::expect_with(|jail| {
        jail.set_env("APP_WS__ECHO_ENDPOINT", "true");
        assert!(load_in(jail, None).is_ok(), "allowed outside production");
        jail.set_env("NODE_ENV", "production");
        assert_eq!(
            error_in(jail, None),
            "invalid setting `ws.echo_endpoint`: the echo endpoint is for conformance tests and is refused in production"
        );
        Ok(())
    });
}

#[test]
fn authentication_needs_strong_keys_and_secret() {
    Jail::expect_with(|jail| {
        jail.set_env("APP_AUTH__ENABLED", "true");
        assert_eq!(
            error_in(jail, None),
            "invalid setting `auth.api_keys`: authentication is enabled but no API key is configured"
        );
        jail.set_env("APP_AUTH__API_KEYS", "short");
        assert!(error_in(jail, None).contains("at least 16 characters"));
        jail.set_env(
            "APP_AUTH__API_KEYS",
            "first-key-0123456789, second-key-0123456789",
        );
        let settings = load_in(jail, None).expect("keys from one comma-separated variable");
        assert_eq!(settings.auth.api_keys.keys().len(), 2);
        jail.set_env("APP_AUTH__TOKEN_TTL_SECS", "86400");
        assert!(error_in(jail, None).contains("at most 3600 seconds"));
        jail.set_env("APP_AUTH__TOKEN_TTL_SECS", "60");
        jail.set_env("APP_AUTH__TOKEN_SECRET", "too-short");
        assert_eq!(
            error_in(jail, None),
            "invalid setting `auth.token_secret`: the token secret must be at least 32 bytes"
        );
        Ok(())
    });
}

#[test]
fn secrets_stay_out_of_debug_output() {
    Jail::expect_with(|jail| {
        jail.set_env("APP_AUTH__ENABLED", "true");
        jail.set_env("APP_AUTH__API_KEYS", "[\"visible-only-to-us-0123\"]");
        jail.set_env(
            "APP_AUTH__TOKEN_SECRET",
            "a-signing-secret-of-32-bytes-or-more",
        );
        let settings = load_in(jail, None).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("visible-only-to-us"), "{debug}");
        assert!(!debug.contains("a-signing-secret"), "{debug}");
        Ok(())
    });
}
