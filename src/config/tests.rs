use super::*;

#[test]
fn shipped_default_file_equals_builtin_defaults() {
    let text = include_str!("../../config/churnwatch.toml");
    let parsed = Config::parse(text).expect("shipped config parses");
    assert_eq!(parsed, Config::default());
}

#[test]
fn unknown_key_is_named() {
    let err = Config::parse("[tiers]\na_percnt = 5\n").unwrap_err();
    assert!(err.to_string().contains("a_percnt"), "{err}");
}

#[test]
fn inconsistent_percentages_name_the_key() {
    let err = Config::parse("[tiers]\na_percent = 60\nb_percent = 50\n").unwrap_err();
    assert!(err.to_string().contains("tiers.b_percent"), "{err}");
}

#[test]
fn webhook_errors_name_the_entry_and_never_echo_the_secret() {
    let text = "[[webhooks]]\nname = \"team\"\nurl = \"ftp://x\"\nsecret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(err.contains("webhooks[0]") && err.contains("url"), "{err}");
    let ok = Config::parse(&text.replace("ftp://x", "https://x")).unwrap();
    assert!(
        !format!("{ok:?}").contains("MDEyMzQ1"),
        "Debug redacts the secret"
    );
}

#[test]
fn a_bad_secret_is_named_by_key_and_position_and_never_echoed() {
    let text =
        "[[webhooks]]\nname = \"team\"\nurl = \"https://x\"\nsecret = \"not-base64 s3cr3t!\"\n";
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(
        err.contains("webhooks[0].secret") && err.contains("<text>:4:"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn parse_errors_never_echo_a_value() {
    for text in [
        "[kafka]\nbrokers = \"sasl-secret-1\"\ngroup_id = 3\n[kafka.consumer]\n\"sasl.password\" = 5\n",
        "[engine]\nclock = \"sasl-secret-2\"\n",
        "[http]\nliveness_timeout = \"sasl-secret-3\"\n",
        "[kafka.consumer]\n\"sasl.password\" = \"sasl-secret-4\n",
        "[[webhooks]]\nname = \"t\"\nurl = \"https://x\"\nsecret = 42\nproxy = \"sasl-secret-5\"\n",
    ] {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(!err.contains("sasl-secret"), "{err}");
        assert!(err.contains("<text>:"), "names the position: {err}");
    }
}

#[test]
fn debug_of_a_config_shows_no_secret() {
    let text = "[kafka.consumer]\n\"sasl.password\" = \"pw-value-1\"\n\
         [[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\ntoken_sha256 = \"aa00000000000000000000000000000000000000000000000000000000000000\"\n\
         [[webhooks]]\nname = \"t\"\nurl = \"https://user:pw-value-2@example.com/x\"\n\
         secret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\nproxy = \"http://u:pw-value-3@proxy:3128\"\n";
    let c = Config::parse(text).expect("parses");
    let shown = format!("{c:?}");
    for secret in ["pw-value", "aa0000", "MDEyMzQ1"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("sasl.password"), "keys stay visible");
}

#[test]
fn a_short_webhook_secret_or_an_inward_target_is_refused_naming_the_entry() {
    let entry = |url: &str, secret: &str| {
        format!("[[webhooks]]\nname = \"team\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n")
    };
    let long = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let err = Config::parse(&entry("https://x.example", "whsec_c2hvcnQ="))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("webhooks[0]") && err.contains("24 bytes"),
        "{err}"
    );
    for url in [
        "http://169.254.169.254/latest",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://localhost/",
        "http://2130706433/",
    ] {
        let err = Config::parse(&entry(url, long)).unwrap_err().to_string();
        assert!(
            err.contains("webhooks[0]") && err.contains("allow_private_network"),
            "{url}: {err}"
        );
        let allowed = entry(url, long) + "allow_private_network = true\n";
        assert!(Config::parse(&allowed).is_ok(), "{url} allowed when asked");
    }
    assert!(Config::parse(&entry("https://retention.example.com/churn", long)).is_ok());
}

#[test]
fn a_public_data_listener_needs_tokens_and_tokens_need_exactly_one_source() {
    let err = Config::parse("[http]\nbind = \"0.0.0.0:9898\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.tokens"), "{err}");
    let token = |extra: &str| {
        format!(
            "[http]\nbind = \"0.0.0.0:9898\"\n[[http.tokens]]\nname = \"a\"\nrole = \"operator\"\n{extra}"
        )
    };
    assert!(Config::parse(&token("token_file = \"/run/secrets/t\"\n")).is_ok());
    for bad in [
        "",
        "token_file = \"/t\"\ntoken_sha256 = \"00\"\n",
        "token_sha256 = \"not-hex\"\n",
    ] {
        let err = Config::parse(&token(bad)).unwrap_err().to_string();
        assert!(err.contains("http.tokens[0]"), "{bad}: {err}");
    }
}

#[test]
fn pass_through_may_not_override_what_the_guarantees_rest_on() {
    for (table, key) in [
        ("consumer", "partition.assignment.strategy"),
        ("consumer", "enable.auto.offset.store"),
        ("consumer", "isolation.level"),
        ("producer", "enable.idempotence"),
    ] {
        let text = format!("[kafka.{table}]\n\"{key}\" = \"x\"\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("kafka.{table}.\"{key}\"")), "{err}");
    }
    let ok = "[kafka.consumer]\n\"security.protocol\" = \"SASL_SSL\"\n";
    assert!(Config::parse(ok).is_ok(), "other properties pass through");
}

#[test]
fn durations_parse_in_human_form() {
    let c = Config::parse("[rules.purchase_recency]\nA = \"10d\"\n").unwrap();
    assert_eq!(c.rules.purchase_recency.a, Some(days(10)));
    assert_eq!(
        c.rules.purchase_recency.b,
        Some(days(45)),
        "an unlisted tier keeps its default"
    );
}

#[test]
fn a_partial_rule_table_overrides_only_the_keys_it_names() {
    let d30 = Some(days(30));
    let d45 = Some(days(45));
    let rules = |toml: &str| Config::parse(toml).unwrap().rules;
    let adaptive = rules("[rules.purchase_recency]\nmode = \"adaptive\"\n").purchase_recency;
    assert_eq!(
        (adaptive.mode, adaptive.a, adaptive.b),
        (RecencyMode::Adaptive, d30, d45)
    );
    let a_only = rules("[rules.purchase_recency]\nA = \"45d\"\n").purchase_recency;
    assert_eq!((a_only.a, a_only.b, a_only.c), (d45, d45, None));
    let off = rules(
        "[rules.purchase_recency]\nB = \"off\"\n[rules.contact_gap]\nA = \"off\"\nC = \"60d\"\n",
    );
    assert_eq!(
        (off.purchase_recency.a, off.purchase_recency.b),
        (d30, None)
    );
    assert_eq!(
        (off.contact_gap.a, off.contact_gap.b, off.contact_gap.c),
        (None, d30, Some(days(60)))
    );
    let min = rules("[rules.purchase_recency.min]\nA = \"7d\"\n")
        .purchase_recency
        .min;
    assert_eq!((min.a, min.b), (Some(days(7)), Some(days(21))));
    let bad = Config::parse("[rules.contact_gap]\nA = \"never\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("rules.contact_gap") && bad.contains("expected `off` or a duration"),
        "{bad}"
    );
}

#[test]
fn a_webhook_takes_exactly_one_of_secret_and_secret_file() {
    let entry =
        |keys: &str| format!("[[webhooks]]\nname = \"team\"\nurl = \"https://x.example\"\n{keys}");
    let long = "secret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
    let file = "secret_file = \"/run/secrets/webhook\"\n";
    assert!(Config::parse(&entry(long)).is_ok());
    assert!(
        Config::parse(&entry(file)).is_ok(),
        "read when the endpoint starts"
    );
    for keys in [String::new(), format!("{long}{file}")] {
        let err = Config::parse(&entry(&keys)).unwrap_err().to_string();
        assert!(
            err.contains("webhooks[0]") && err.contains("exactly one of secret and secret_file"),
            "{err}"
        );
    }
}

#[test]
fn a_segments_rules_override_only_what_they_name_over_the_global_ones() {
    let c = Config::parse(
        "[rules.purchase_recency]\nA = \"20d\"\n[rules.contact_gap]\nA = \"7d\"\n\
         [segments]\ndefault = \"retail\"\n\
         [segments.wholesale]\n[segments.wholesale.rules.purchase_recency]\nB = \"90d\"\n\
         [segments.wholesale.rules.rep_turnover]\nhandoff_threshold = 5\n",
    )
    .unwrap();
    let w = &c.segments.declared["wholesale"].rules_in_force;
    assert_eq!(w.purchase_recency.a, Some(days(20)), "the global override");
    assert_eq!(w.purchase_recency.b, Some(days(90)), "its own");
    assert_eq!(w.purchase_recency.c, None, "the built-in default");
    assert_eq!(w.contact_gap.a, Some(days(7)));
    assert_eq!(w.rep_turnover.handoff_threshold, 5);
    assert!(
        w.rep_turnover.departed,
        "untouched keys keep their defaults"
    );
    let s = c.segmentation();
    let names: Vec<&str> = s.segments.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["retail", "wholesale"]);
    assert_eq!(s.default, 0);
    assert_eq!(
        s.segments[0].rules.purchase_recency[0],
        Some(days(20)),
        "an undeclared default segment runs the global rules"
    );
}

#[test]
fn bad_segments_are_refused_by_name() {
    let err = |toml: &str| Config::parse(toml).unwrap_err().to_string();
    let e = err("[segments.wholesale.rules.purchase_recency]\nQ = \"9d\"\n");
    assert!(e.contains("segments.wholesale") && e.contains("Q"), "{e}");
    let e = err("[segments.wholesale.rules.rep_turnover]\nhandoff_threshold = 0\n");
    assert!(
        e.contains("segments.wholesale") && e.contains("handoff_threshold"),
        "{e}"
    );
    let e = err("[segments]\ndefault = \"has space\"\n");
    assert!(e.contains("has space"), "{e}");
    let e = err("[segments.wholesale]\ntiers = \"mine\"\n");
    assert!(e.contains("mine") || e.contains("own"), "{e}");
    let e = err(
        "[[webhooks]]\nname = \"w\"\nurl = \"https://example.com/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsegments = [\"outlet\"]\n",
    );
    assert!(e.contains("outlet") && e.contains("not declared"), "{e}");
    let e = err("[segments]\nkey_accounts = { file = \"/nonexistent/key-accounts.txt\" }\n");
    assert!(e.contains("/nonexistent/key-accounts.txt"), "{e}");
}

#[test]
fn a_key_accounts_file_lists_one_id_per_line_without_comments_or_blanks() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("key-accounts.txt");
    std::fs::write(&list, "# strategic\nk\n\n").unwrap();
    let config = Config::parse(&format!(
        "[segments]\nkey_accounts = {{ file = \"{}\" }}\n",
        list.display()
    ))
    .unwrap();
    let ids = config.engine_settings().segments.key_accounts;
    assert_eq!(ids, vec![crate::engine::event::CustomerKey::from("k")]);
}
