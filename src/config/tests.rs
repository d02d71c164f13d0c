//! The configuration as read from TOML text: keys named in refusals, environment
//! overrides, and the typed reading of each section.

use super::*;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_toml_str_with_env(toml, env)
}

const MINIMAL: &str = r#"
    [[tenants]]
    name = "Environment"
    [[chat.instances]]
    alias = "117"
    kind = "mock"
"#;

/// The e-mail hardening keys (issue 13): read from the file and the environment (the
/// allow-list as a comma-separated list), and refused with the key named.
#[test]
fn email_abuse_keys_are_read_and_checked() {
    let c = load(
        &format!("{MINIMAL}\n[email]\nsender = \"web@company.com\"\ngive_up_after_secs = 60\n"),
        &[
            (
                "GATEWAY__EMAIL__MAILBOXES",
                "sales@company.com,billing@company.com",
            ),
            ("GATEWAY__EMAIL__PER_ADDRESS_PER_HOUR", "0"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.email.mailboxes,
        ["sales@company.com", "billing@company.com"]
    );
    assert_eq!(c.email.sender.as_deref(), Some("web@company.com"));
    assert_eq!(c.email.per_address_per_hour, 0);
    assert_eq!(c.email.give_up_after_secs, 60);
    assert!(c.email.mailbox_policy().allows("billing@company.com"));
    assert!(c.email.mailbox_policy().allows("contact-center@localhost"));
    for (toml, key) in [
        ("mailboxes = [\"not an address\"]", "email.mailboxes"),
        ("sender = \"x\"", "email.sender"),
        ("max_text_bytes = 0", "email.max_text_bytes"),
        ("give_up_after_secs = 0", "email.give_up_after_secs"),
        ("parallel_deliveries = 0", "email.parallel_deliveries"),
        ("max_concurrent_intakes = 0", "email.max_concurrent_intakes"),
        ("per_address_burst = 0", "email.per_address_burst"),
        ("global_burst = 0", "email.global_burst"),
        ("max_attempts = 10", "max_attempts"),
    ] {
        let e = load(&format!("{MINIMAL}\n[email]\n{toml}\n"), &[]).unwrap_err();
        assert!(e.to_string().contains(key), "{toml}: {e}");
    }
}

#[test]
fn repository_default_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let config = Config::load_with_env(&path, std::iter::empty()).unwrap();
    let aliases: Vec<_> = config.chat.instances.iter().map(|i| &i.alias[..]).collect();
    assert_eq!(aliases, ["117", "118"]);
    assert!(config.tenant("Environment").is_some());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn environment_overrides_the_file() {
    let c = load(
        MINIMAL,
        &[
            ("GATEWAY__SERVER__LISTEN", "127.0.0.1:9000"),
            ("GATEWAY__MOCK__SESSION_LIMIT", "5"),
            ("OTHER__SERVER__LISTEN", "1.2.3.4:1"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.mock.session_limit.get(), 5);
}

#[test]
fn errors_name_the_key() {
    let e = load(MINIMAL, &[("GATEWAY__SERVER__LISTEN", "nowhere")]).unwrap_err();
    assert!(e.to_string().contains("server.listen"), "{e}");
    let e = load(&format!("{MINIMAL}\n[server]\nlisten_typo = 1\n"), &[]).unwrap_err();
    assert!(e.to_string().contains("listen_typo"), "{e}");
    let e = load(&MINIMAL.replace("\"mock\"", "\"smoke\""), &[]).unwrap_err();
    assert!(e.to_string().contains("kind"), "{e}");
    let e = load(
        &format!("{MINIMAL}\n[credentials]\nsecret = \"short\"\n"),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("credentials.secret"), "{e}");
    let tcp = |extra: &str| {
        format!("{MINIMAL}\n[[chat.instances]]\nalias = \"200\"\nkind = \"tcp\"\n{extra}")
    };
    let e = load(&tcp(""), &[]).unwrap_err();
    assert!(e.to_string().contains("chat.instances[1].address"), "{e}");
    let e = load(&tcp("address = \"nohost\"\n"), &[]).unwrap_err();
    assert!(e.to_string().contains("chat.instances[1].address"), "{e}");
    let c = load(
        &tcp("address = \"chat1.example:7117\"\n[tcp]\nconnections = 3\n"),
        &[],
    )
    .unwrap();
    let address = "chat1.example:7117".to_string();
    assert_eq!(c.chat.instances[1].kind, InstanceKind::Tcp { address });
    assert_eq!(c.tcp.connections, 3);
    let e = load(
        &tcp("address = \"h:1\"\n[tcp]\nrequest_timeout_ms = 60000\n"),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("tcp.request_timeout_ms"), "{e}");
    let e = load(&format!("{MINIMAL}address = \"h:1\"\n"), &[]).unwrap_err();
    assert!(e.to_string().contains("chat.instances[0].address"), "{e}");
    for (env, key) in [
        ("GATEWAY__LIMITS__IDLE_TIMEOUT_MS", "limits.idle_timeout_ms"),
        ("GATEWAY__LIMITS__MAX_CONNECTIONS", "limits.max_connections"),
        ("GATEWAY__TCP__MAX_IN_FLIGHT", "tcp.max_in_flight"),
        ("GATEWAY__MOCK__SESSION_LIMIT", "mock.session_limit"),
        (
            "GATEWAY__LIMITS__MAX_HEADER_BYTES",
            "limits.max_header_bytes",
        ),
        ("GATEWAY__ADMIN__TOKEN", "admin.token"),
        ("GATEWAY__PUSH__HEARTBEAT_SECS", "push.heartbeat_secs"),
        ("GATEWAY__PUSH__WATCH_SECS", "push.watch_secs"),
        ("GATEWAY__PUSH__MAX_STREAMS", "push.max_streams"),
        (
            "GATEWAY__SERVER__SHUTDOWN_DEADLINE_MS",
            "server.shutdown_deadline_ms",
        ),
    ] {
        let e = load(MINIMAL, &[(env, "0")]).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    // A heartbeat must move bytes before the idle timeout closes the stream's connection.
    let e = load(
        MINIMAL,
        &[
            ("GATEWAY__PUSH__HEARTBEAT_SECS", "20"),
            ("GATEWAY__LIMITS__IDLE_TIMEOUT_MS", "20000"),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("push.heartbeat_secs"), "{e}");
    let c = load(MINIMAL, &[("GATEWAY__PUSH__MAX_STREAMS_PER_IP", "0")]).unwrap();
    assert_eq!(c.push.max_streams_per_ip, 0);
    assert_eq!(c.push.heartbeat, std::time::Duration::from_secs(15));
    let cors = MINIMAL.replace(
        "name = \"Environment\"",
        "name = \"Environment\"\ncors_origins = [\"https://shop.example.com/\"]",
    );
    let e = load(&cors, &[]).unwrap_err();
    assert!(e.to_string().contains("tenants[0].cors_origins"), "{e}");
    let e = load(
        MINIMAL,
        &[
            ("GATEWAY__SERVER__LISTEN", "127.0.0.1:9000"),
            ("GATEWAY__ADMIN__LISTEN", "127.0.0.1:9000"),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("admin.listen"), "{e}");
    let dup = format!("{MINIMAL}\n[[chat.instances]]\nalias = \"117\"\nkind = \"mock\"\n");
    let e = load(&dup, &[]).unwrap_err();
    assert!(e.to_string().contains("chat.instances[1].alias"), "{e}");
}

#[test]
fn gms_http_and_file_sections() {
    let toml = format!(
        "{MINIMAL}\n[[chat.instances]]\nalias = \"gms\"\nkind = \"http\"\n\
         [chat.instances.http]\nbase_url = \"https://gms.example:8443/p\"\n\
         [chat.instances.http.services]\n\"Environment/sales\" = \"sales\"\n\
         [[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n"
    );
    let c = load(&toml, &[("GATEWAY__MOCK__FILES__MAX_FILES", "2")]).unwrap();
    let InstanceKind::Http(http) = &c.chat.instances[1].kind else {
        panic!("{:?}", c.chat.instances[1].kind)
    };
    assert_eq!(http.service_for("Environment", "sales"), "sales");
    assert_eq!(
        http.service_for("Environment", "default"),
        "customer-support"
    );
    assert_eq!(
        c.gms.service("customer-support").unwrap().tenant,
        "Environment"
    );
    assert_eq!(c.mock.files.max_files, 2);
    assert_eq!(http.dialect, backend_http::Dialect::Gms, "the default");
    let webapi = load(
        &toml.replace(
            "[chat.instances.http]\n",
            "[chat.instances.http]\ndialect = \"webapi\"\n",
        ),
        &[],
    )
    .unwrap();
    let InstanceKind::Http(http) = &webapi.chat.instances[1].kind else {
        panic!("{:?}", webapi.chat.instances[1].kind)
    };
    assert_eq!(http.dialect, backend_http::Dialect::Webapi);
    let e = load(
        &toml.replace(
            "[chat.instances.http]\n",
            "[chat.instances.http]\ndialect = \"soap\"\n",
        ),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("dialect") && e.contains("chat.instances[1]"),
        "{e}"
    );
    let keyed = load(
        &format!("{toml}[gms.tenant_api_keys]\nEnvironment = \"0123456789abcdef\"\n"),
        &[],
    )
    .unwrap();
    let svc = keyed.gms.service("customer-support").unwrap();
    assert_eq!(keyed.gms.api_key(svc), Some("0123456789abcdef"));

    let cases = [
        (
            format!("{MINIMAL}\n[chat.health]\nrise = 0\n"),
            "chat.health.rise",
        ),
        (
            format!("{MINIMAL}\n[admin]\ntoken = \"short\"\n"),
            "admin.token",
        ),
        (format!("{MINIMAL}\nstate = \"sleeping\"\n"), "state"),
        (
            format!("{MINIMAL}\n[[chat.instances]]\nalias = \"g\"\nkind = \"http\"\n"),
            "chat.instances[1].http",
        ),
        (
            toml.replace("https://gms.example:8443/p", "gms.example"),
            "chat.instances[1].http.base_url",
        ),
        (
            format!("{MINIMAL}\n[chat.instances.http]\nbase_url = \"http://x\"\n"),
            "chat.instances[0].http",
        ),
        (
            toml.replace("tenant = \"Environment\"", "tenant = \"Nope\""),
            "gms.services[0].tenant",
        ),
        (
            format!("{toml}api_key = \"short\"\n"),
            "gms.services[0].api_key",
        ),
        (
            format!("{MINIMAL}\n[mock.files]\nmax_file_size = 10\nmax_total_size = 5\n"),
            "mock.files.max_file_size",
        ),
        (
            format!("{MINIMAL}\n[gms.tenant_api_keys]\nNope = \"0123456789abcdef\"\n"),
            "gms.tenant_api_keys.Nope",
        ),
    ];
    for (text, key) in cases {
        let e = load(&text, &[]).unwrap_err();
        assert!(e.to_string().contains(key), "{key} not named in: {e}");
    }
}

#[cfg(test)]
mod typed {
    //! The typed reading: the instance kind with its data, durations, non-zero counts,
    //! unknown keys, secrets.
    use std::time::Duration;

    use super::*;

    const MINIMAL: &str = "[[tenants]]\nname = \"E\"\n[[chat.instances]]\nalias = \"a\"\n\
                           kind = \"mock\"\n";

    fn refusal(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn the_instance_kind_carries_its_data() {
        let c = Config::from_toml_str(&format!(
            "{MINIMAL}[[chat.instances]]\nalias = \"t\"\nkind = \"tcp\"\naddress = \"h:7117\"\n\
             [[chat.instances]]\nalias = \"g\"\nkind = \"http\"\nweight = 3\n\
             [chat.instances.http]\nbase_url = \"https://gms.example\"\nrequest_timeout_ms = 500\n"
        ))
        .unwrap();
        let kinds: Vec<_> = c.chat.instances.iter().map(|i| &i.kind).collect();
        assert_eq!(kinds[0], &InstanceKind::Mock);
        assert_eq!(kinds[1].address(), Some("h:7117"));
        let InstanceKind::Http(http) = kinds[2] else {
            panic!("{:?}", kinds[2])
        };
        assert_eq!(http.request_timeout, Duration::from_millis(500));
        assert_eq!(http.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.chat.instances[2].weight, 3);
        assert_eq!(
            kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
            ["mock", "tcp", "http"]
        );
    }

    #[test]
    fn ms_and_secs_keys_are_durations() {
        let c = Config::from_toml_str(&format!(
            "{MINIMAL}[server]\nrequest_timeout_ms = 6500\n[mock]\ndisconnect_timeout_secs = 7\n\
             agent_join_delay_ms = 5\n[tcp]\nconnect_timeout_ms = 250\n\
             [limits]\nbad_credentials_period_secs = 9\n[cors]\nmax_age_secs = 30\n\
             [chat.health]\neject_ms = 40\n"
        ))
        .unwrap();
        assert_eq!(c.server.request_timeout, Duration::from_millis(6500));
        assert_eq!(c.mock.disconnect_timeout, Duration::from_secs(7));
        assert_eq!(c.mock.agent_join_delay, Duration::from_millis(5));
        assert_eq!(c.tcp.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.bad_credentials_period, Duration::from_secs(9));
        assert_eq!(c.cors.max_age, Duration::from_secs(30));
        assert_eq!(c.chat.health.eject_for, Duration::from_millis(40));
        let e = refusal(&format!("{MINIMAL}[tcp]\nstatus_interval_ms = 0\n"));
        assert!(e.contains("tcp.status_interval_ms"), "{e}");
    }

    #[test]
    fn zero_counts_are_refused_by_key() {
        for (section, key) in [
            ("limits", "max_connections"),
            ("limits", "bad_credentials_burst"),
            ("chat.health", "fall"),
            ("chat.health", "eject_after"),
            ("tcp", "max_in_flight"),
            ("mock", "session_limit"),
        ] {
            let e = refusal(&format!("{MINIMAL}[{section}]\n{key} = 0\n"));
            assert!(e.contains(&format!("{section}.{key}")), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        for (extra, key) in [
            ("adress = \"h:1\"\n", "adress"),
            ("[tcp]\nconections = 2\n", "conections"),
            ("[mock.files]\nmax_filez = 2\n", "max_filez"),
            ("[limits]\nmax_connection = 2\n", "max_connection"),
            ("[gms]\nmax_upload = 2\n", "max_upload"),
        ] {
            let e = refusal(&format!("{MINIMAL}{extra}"));
            assert!(e.contains(key), "{key} not named in: {e}");
        }
        let e = refusal(&format!(
            "{MINIMAL}[[chat.instances]]\nalias = \"g\"\nkind = \"http\"\n\
             [chat.instances.http]\nbase_url = \"https://gms.example\"\napi_kee = \"k\"\n"
        ));
        assert!(
            e.contains("api_kee") && e.contains("chat.instances[1]"),
            "{e}"
        );
    }

    #[test]
    fn origins_and_file_types_are_read_once() {
        let c = Config::from_toml_str(
            "[[tenants]]\nname = \"E\"\ncors_origins = [\"https://*.shop.example\", \"*\"]\n\
             [[chat.instances]]\nalias = \"a\"\nkind = \"mock\"\n\
             [mock.files]\nfile_types = [\"PDF\", \"Txt\"]\n",
        )
        .unwrap();
        let wildcard = Origin::Wildcard {
            scheme: "https://".into(),
            suffix: ".shop.example".into(),
        };
        assert_eq!(c.tenants[0].cors_origins, [wildcard, Origin::Any]);
        assert_eq!(c.mock.files.file_types, ["pdf", "txt"]);
    }

    #[test]
    fn secrets_are_not_printed() {
        let secrets = [
            "credentials-secret-0123456789abcdef",
            "admin-token-0123456789",
            "tenant-key-0123456789",
            "service-key-0123456789",
            "gms-instance-key-0123",
            "smtp-password-0123",
            "email-api-key-0123",
        ];
        let c = Config::from_toml_str(&format!(
            "[credentials]\nsecret = \"{}\"\n[admin]\ntoken = \"{}\"\n\
             [[tenants]]\nname = \"E\"\n[gms.tenant_api_keys]\nE = \"{}\"\n\
             [[gms.services]]\nname = \"s\"\ntenant = \"E\"\napi_key = \"{}\"\n\
             [[chat.instances]]\nalias = \"g\"\nkind = \"http\"\n[chat.instances.http]\n\
             base_url = \"https://gms.example\"\napi_key = \"{}\"\n\
             [email.backend.smtp]\nhost = \"h\"\nusername = \"u\"\npassword = \"{}\"\n\
             [email.backend.http]\nbase_url = \"https://gms.example\"\napi_key = \"{}\"\n",
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6]
        ))
        .unwrap();
        let printed = format!("{c:?} {c:#?}");
        for secret in secrets {
            assert!(!printed.contains(secret), "{secret} printed");
        }
        assert_eq!(c.admin.token.as_ref().map(|t| t.expose()), Some(secrets[1]));
        // A changed secret is a changed section (a reload names it).
        let mut other = c.clone();
        other.admin.token = Some("admin-token-9876543210".into());
        assert_ne!(c.admin, other.admin);
    }
}

#[test]
fn cometd_keys_are_read_and_checked() {
    let c = load(
        &format!("{MINIMAL}\n[cometd]\nconnect_timeout_ms = 20000\nmax_follow = 4\n"),
        &[("GATEWAY__COMETD__COOKIE_SECURE", "true")],
    )
    .unwrap();
    assert_eq!(c.cometd.connect_timeout, std::time::Duration::from_secs(20));
    assert_eq!(c.cometd.max_follow, 4);
    assert!(c.cometd.cookie_secure);
    for (toml, key) in [
        ("max_follow = 9", "cometd.max_follow"),
        ("max_batch = 0", "cometd.max_batch"),
        ("max_connects = 0", "cometd.max_connects"),
        ("cookie_same_site = \"none\"", "cometd.cookie_same_site"),
        ("idle_connect_ms = 30000", "cometd.idle_connect_ms"),
        ("connect_timeout_ms = 58000", "cometd.connect_timeout_ms"),
    ] {
        let e = load(&format!("{MINIMAL}\n[cometd]\n{toml}\n"), &[]).unwrap_err();
        assert!(e.to_string().contains(key), "{toml}: {e}");
    }
}
