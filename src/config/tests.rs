//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

use super::*;

/// Why the configuration in the environment (and the jail's files) is
/// refused; panics if it loads.
fn refusal() -> String {
    load(&Overrides::default())
        .err()
        .expect("the configuration is refused")
        .to_string()
}

#[test]
fn default_file_matches_code_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hearsay.toml"))
        .unwrap();
    let from_file: Config = Figment::from(Toml::string(&text)).extract().unwrap();
    let expected = Config {
        socket_address: from_file.socket_address.clone(),
        ..Config::default()
    };
    assert_eq!(from_file, expected);
}

#[test]
fn every_key_is_listed() {
    let dict: Dict = Figment::from(Serialized::defaults(Config::default()))
        .extract()
        .unwrap();
    let mut listed: Vec<&str> = KEYS.to_vec();
    listed.sort();
    let mut present: Vec<&str> = dict.keys().map(String::as_str).collect();
    present.push("listen");
    present.push("cluster_key");
    present.push("keyring_file");
    present.push("internal_auth");
    present.push("admin_token");
    present.push("data_dir");
    present.sort();
    present.dedup();
    assert_eq!(listed, present);
}

#[test]
#[allow(clippy::result_large_err)] // figment's test jail fixes the signature
fn flags_override_and_errors_name_the_setting_and_source() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        jail.set_env("VIEW", "127.0.0.1:9000, 127.0.0.1:9001");
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "250");
        jail.set_env("HEARSAY_SOMETHING_ELSE", "ignored");
        let loaded = load(&Overrides {
            file: None,
            pairs: vec![("causal-wait-ms".into(), "42".into())],
        })
        .unwrap();
        assert_eq!(loaded.config.view, vec!["127.0.0.1:9000", "127.0.0.1:9001"]);
        assert_eq!(loaded.config.gossip_interval_ms, 250);
        assert_eq!(loaded.config.causal_wait_ms, 42);
        let explained = loaded.explain();
        let gossip = explained
            .iter()
            .find(|(k, _, _)| k == "gossip_interval_ms")
            .unwrap();
        assert_eq!(gossip.2, "environment variable HEARSAY_GOSSIP_INTERVAL_MS");
        let view = explained.iter().find(|(k, _, _)| k == "view").unwrap();
        assert_eq!(view.2, "environment variable VIEW");

        jail.set_env("HEARSAY_DEAD_AFTER_MS", "soon");
        let error = refusal();
        assert!(error.contains("dead_after_ms"), "{error}");

        jail.set_env("HEARSAY_DEAD_AFTER_MS", "100");
        let error = refusal();
        assert!(
            error.contains("dead_after_ms") && error.contains("HEARSAY_DEAD_AFTER_MS"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn every_number_has_a_range_that_admits_its_default() {
    let defaults = Config::default();
    let numbers = defaults.numbers();
    let checked: Vec<&str> = numbers.iter().map(|(key, _)| *key).collect();
    let ranged: Vec<&str> = RANGES.iter().map(|(key, _, _)| *key).collect();
    assert_eq!(checked, ranged);
    for key in KEYS {
        let numeric = key.ends_with("_ms")
            || key.ends_with("_bytes")
            || key.ends_with("_connections")
            || key.ends_with("_threads")
            || *key == "protocol_version";
        assert_eq!(numeric, checked.contains(key), "{key}");
    }
    for ((key, value), (_, min, max)) in numbers.iter().zip(RANGES) {
        assert!((*min..=*max).contains(value), "default of {key}");
    }
}

#[test]
#[allow(clippy::result_large_err)]
fn out_of_range_numbers_stop_loading_naming_setting_value_source_and_range() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", u64::MAX.to_string());
        let error = refusal();
        for part in [
            "gossip_interval_ms",
            "18446744073709551615",
            "environment variable HEARSAY_GOSSIP_INTERVAL_MS",
            "1..=3600000 ms",
        ] {
            assert!(error.contains(part), "{part} missing in: {error}");
        }

        // Both ends of a range are allowed; one past either end is not.
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "3600000");
        assert_eq!(
            load(&Overrides::default())
                .unwrap()
                .config
                .gossip_interval_ms,
            3_600_000
        );
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "1");
        assert!(load(&Overrides::default()).is_ok());
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "0");
        let error = refusal();
        assert!(error.contains("0 is out of range"), "{error}");
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "3600001");
        assert!(load(&Overrides::default()).is_err());
        jail.set_env("HEARSAY_GOSSIP_INTERVAL_MS", "100");

        // Waits that may be skipped start at 0; grace periods reach a day.
        let flags = |pairs: &[(&str, &str)]| Overrides {
            file: None,
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let loaded = load(&flags(&[
            ("causal_wait_ms", "0"),
            ("dead_member_grace_ms", "86400000"),
        ]))
        .unwrap();
        assert_eq!(loaded.config.dead_member_grace_ms, 86_400_000);

        let error = load(&flags(&[("max_body_bytes", "1073741824")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("max_body_bytes")
                && error.contains("command-line flag")
                && error.contains("1..=67108864"),
            "{error}"
        );

        jail.create_file("grace.toml", "dead_member_grace_ms = 86400001\n")?;
        let error = load(&Overrides {
            file: Some("grace.toml".into()),
            pairs: vec![],
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.contains("dead_member_grace_ms")
                && error.contains("grace.toml")
                && error.contains("0..=86400000 ms"),
            "{error}"
        );

        let error = load(&flags(&[("max_open_connections", "0")]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("max_open_connections"), "{error}");
        Ok(())
    });
}

#[test]
fn every_replica_gets_every_core_unless_told_otherwise() {
    let view: Vec<String> = ["127.0.0.1:8082", "127.0.0.1:8083", "127.0.0.1:8084"]
        .map(String::from)
        .to_vec();
    // Co-located replicas are not given a share: the one that takes all of
    // the clients' load needs every core.
    let local = Config::for_address("127.0.0.1:8082", &view);
    assert_eq!(local.effective_worker_threads(2), 2);
    assert_eq!(local.effective_worker_threads(8), 8);
    assert_eq!(local.effective_worker_threads(0), 1);
    let containers: Vec<String> = ["10.10.0.2:8090", "10.10.0.3:8090"]
        .map(String::from)
        .to_vec();
    let alone = Config::for_address("10.10.0.2:8090", &containers);
    assert_eq!(alone.effective_worker_threads(2), 2);
    let explicit = Config {
        worker_threads: 3,
        ..local
    };
    assert_eq!(explicit.effective_worker_threads(2), 3);
}

#[test]
#[allow(clippy::result_large_err)]
fn unknown_keys_in_a_file_are_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            "socket_address = \"127.0.0.1:1\"\ngossip_intervall_ms = 5\n",
        )?;
        let error = load(&Overrides {
            file: Some("bad.toml".into()),
            pairs: vec![],
        })
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("gossip_intervall_ms"), "{error}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn keys_are_validated_at_load_and_the_modes_must_fit_them() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        let flags = |pairs: &[(&str, &str)]| Overrides {
            file: None,
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let error = |pairs: &[(&str, &str)]| load(&flags(pairs)).err().unwrap().to_string();
        const KEY: &str = "a-key-of-sixteen-bytes";
        let loaded = load(&flags(&[("cluster_key", KEY)])).unwrap();
        assert_eq!(
            loaded.config.effective_internal_auth(),
            InternalAuth::Required
        );
        let hidden = loaded.explain();
        assert!(hidden.iter().all(|(_, value, _)| !value.contains(KEY)));

        let short = error(&[("cluster_key", "s3cret")]);
        assert!(
            short.contains("cluster_key") && short.contains("16..=256"),
            "{short}"
        );
        assert!(!short.contains("s3cret"), "the key is never shown: {short}");
        let both = error(&[("cluster_key", KEY), ("cluster_keys", KEY)]);
        assert!(both.contains("set only one"), "{both}");
        let duplicate = error(&[("cluster_keys", &format!("{KEY},{KEY}"))]);
        assert!(duplicate.contains("repeats"), "{duplicate}");
        let keyless = error(&[("internal_auth", "transitional")]);
        assert!(keyless.contains("needs a key"), "{keyless}");
        let legacy = error(&[("cluster_key", KEY), ("protocol_version", "1")]);
        assert!(
            legacy.contains("protocol_version") && legacy.contains("in clear"),
            "{legacy}"
        );
        assert!(load(&flags(&[("protocol_version", "1")])).is_ok());
        let window = error(&[("signature_window_ms", "999")]);
        assert!(window.contains("1000..=600000"), "{window}");

        jail.create_file(
            "keyring",
            &format!("# primary first\n{KEY}\nanother-key-of-16-bytes\n"),
        )?;
        let loaded = load(&flags(&[
            ("keyring_file", "keyring"),
            ("internal_auth", "transitional"),
        ]))
        .unwrap();
        assert_eq!(
            loaded.config.effective_internal_auth(),
            InternalAuth::Transitional
        );
        jail.create_file("bad-keyring", "# nothing but comments\n")?;
        let empty = error(&[("keyring_file", "bad-keyring")]);
        assert!(
            empty.contains("keyring_file") && empty.contains("no key"),
            "{empty}"
        );
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's test jail fixes the signature
fn addresses_are_canonical_and_usable_and_the_operator_token_is_long_enough() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "[::ffff:127.0.0.1]:9000");
        jail.set_env(
            "VIEW",
            "127.0.0.1:9000,[::ffff:127.0.0.1]:9001,127.0.0.1:9001",
        );
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(loaded.config.socket_address, "127.0.0.1:9000");
        assert_eq!(loaded.config.view, vec!["127.0.0.1:9000", "127.0.0.1:9001"]);

        jail.set_env("VIEW", "127.0.0.1:9000,0.0.0.0:0");
        let error = refusal();
        assert!(
            error.contains("`view`") && error.contains("0.0.0.0:0"),
            "{error}"
        );
        jail.set_env("VIEW", "");
        for unusable in ["0.0.0.0:9000", "127.0.0.1:0", "[::]:9000", "224.0.0.1:9000"] {
            jail.set_env("SOCKET_ADDRESS", unusable);
            let error = refusal();
            assert!(error.contains("`socket_address`"), "{unusable}: {error}");
        }

        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        jail.set_env("HEARSAY_ADMIN_TOKEN", "short");
        let error = refusal();
        assert!(error.contains("admin_token"), "{error}");
        jail.set_env("HEARSAY_ADMIN_TOKEN", "sixteen-bytes-ok");
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(
            loaded.config.admin_token.as_deref(),
            Some("sixteen-bytes-ok")
        );
        let shown = loaded.explain();
        let token = shown.iter().find(|(k, _, _)| k == "admin_token").unwrap();
        assert_eq!(token.1, "(set, hidden)");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's test jail fixes the signature
fn durability_settings_load_and_are_bounded() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(loaded.config.data_dir, None, "in memory by default");
        assert_eq!(loaded.config.sync, SyncPolicy::Always);
        jail.set_env("HEARSAY_DATA_DIR", "/var/lib/hearsay");
        jail.set_env("HEARSAY_SYNC", "interval");
        jail.set_env("HEARSAY_SYNC_INTERVAL_MS", "250");
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(
            loaded.config.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/hearsay"))
        );
        assert_eq!(loaded.config.sync, SyncPolicy::Interval);
        assert_eq!(loaded.config.sync_interval_ms, 250);
        jail.set_env("HEARSAY_SYNC", "sometimes");
        let error = refusal();
        assert!(error.contains("sync"), "{error}");
        jail.set_env("HEARSAY_SYNC", "never");
        jail.set_env("HEARSAY_SYNC_INTERVAL_MS", "0");
        let error = refusal();
        assert!(error.contains("sync_interval_ms"), "{error}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's test jail fixes the signature
fn ack_replicas_loads_from_numbers_and_words_and_refuses_others() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SOCKET_ADDRESS", "127.0.0.1:9000");
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(loaded.config.ack_replicas, AckReplicas::One);
        for (text, expected) in [
            ("1", AckReplicas::One),
            ("2", AckReplicas::Two),
            ("majority", AckReplicas::Majority),
            ("ALL", AckReplicas::All),
        ] {
            jail.set_env("HEARSAY_ACK_REPLICAS", text);
            let loaded = load(&Overrides::default()).unwrap();
            assert_eq!(loaded.config.ack_replicas, expected, "{text}");
        }
        for bad in ["3", "0", "most"] {
            jail.set_env("HEARSAY_ACK_REPLICAS", bad);
            let error = refusal();
            assert!(error.contains("ack_replicas"), "{bad}: {error}");
        }
        Ok(())
    });
}

#[test]
fn ack_replicas_needed_is_capped_by_the_view() {
    assert_eq!(AckReplicas::One.needed(3), 1);
    assert_eq!(AckReplicas::Two.needed(3), 2);
    assert_eq!(AckReplicas::Two.needed(1), 1);
    assert_eq!(AckReplicas::Majority.needed(1), 1);
    assert_eq!(AckReplicas::Majority.needed(4), 3);
    assert_eq!(AckReplicas::Majority.needed(5), 3);
    assert_eq!(AckReplicas::All.needed(5), 5);
    assert_eq!(AckReplicas::All.needed(0), 1);
}
