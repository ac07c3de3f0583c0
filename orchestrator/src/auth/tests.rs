use super::*;
use crate::config::Config;
use serde_json::json;

fn config(extra: serde_json::Value) -> Config {
    let mut v = json!({
        "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["a", "b"] } },
        "control": { "token": "op-secret" },
        "clients": {
            "reporter": { "tools": ["a"], "token": "rep-secret", "act_for": ["writer"] },
            "writer": { "tools": ["*"], "token": "wri-secret", "read": true },
            "alice": { "token": "alice-secret", "approve": true }
        }
    });
    if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            base.insert(k.clone(), val.clone());
        }
    }
    Config::from_slice(v.to_string().as_bytes()).expect("valid configuration")
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token("Bearer abc").ok(), Some("abc"));
    assert_eq!(bearer_token("bearer  abc ").ok(), Some("abc"));
    assert!(bearer_token("Basic abc").is_err());
    assert!(bearer_token("Bearer").is_err());
    assert!(bearer_token("Bearer ").is_err());
}

#[tokio::test]
async fn tokens_prove_identities_and_names_prove_nothing() {
    let config = config(json!({}));
    let auth = Authenticator::new();
    let who = |token: Option<&'static str>| {
        let auth = auth.clone();
        let config = &config;
        async move { auth.identify(config, token).await.map(|i| i.name) }
    };
    assert_eq!(
        who(Some("rep-secret")).await.ok().as_deref(),
        Some("reporter")
    );
    assert_eq!(who(Some("op-secret")).await.ok().as_deref(), Some(OPERATOR));
    assert_eq!(who(None).await.ok().as_deref(), Some(ANONYMOUS));
    assert!(matches!(
        who(Some("reporter")).await,
        Err(AuthError::UnknownToken)
    ));
    assert!(matches!(
        who(Some("rep-secre")).await,
        Err(AuthError::UnknownToken)
    ));
    let required = self::config(json!({ "auth": { "required": true } }));
    assert!(matches!(
        auth.identify(&required, None).await,
        Err(AuthError::Missing)
    ));
}

#[test]
fn the_caller_string_starts_with_the_identity_and_labels_grant_nothing() {
    let config = config(json!({}));
    let anonymous = Identity::anonymous().caller("as \"reporter\"");
    assert_eq!(crate::config::caller_name(&anonymous), ANONYMOUS);
    assert_eq!(
        config.allowed_for(&anonymous, None).map(|a| a.tools.len()),
        Some(0),
        "an unknown caller gets the empty anonymous allow-list"
    );
    let reporter = Identity {
        name: "reporter".into(),
        proof: Proof::Token,
    };
    let caller = reporter.caller("mcp client \"writer\"\u{7}");
    assert_eq!(caller, "reporter (token; mcp client \"writer\")");
    assert_eq!(
        config.allowed_for(&caller, None).map(|a| a.tools.len()),
        Some(1)
    );
    for lookalike in ["Reporter", " reporter", "reporter\u{200b}", "rеporter"] {
        assert_eq!(
            config.allowed_for(lookalike, None).map(|a| a.tools.len()),
            Some(0),
            "{lookalike:?}"
        );
    }
}

#[test]
fn ownership_read_and_approve_permits() {
    let config = config(json!({}));
    let id = |name: &str| Identity {
        name: name.into(),
        proof: Proof::Token,
    };
    let owner = "writer (token; as \"w\")";
    assert!(permit_owner(&config, &id("writer"), "wf-1", owner).is_ok());
    assert!(
        permit_owner(&config, &id("reporter"), "wf-1", owner).is_ok(),
        "act_for"
    );
    assert!(permit_owner(&config, &id(OPERATOR), "wf-1", owner).is_ok());
    let refused = permit_owner(&config, &id("alice"), "wf-1", owner).unwrap_err();
    assert!(refused.to_string().contains("owner rule"), "{refused}");
    assert!(permit_owner(&config, &Identity::anonymous(), "wf-1", owner).is_err());

    assert!(permit_approve(&config, &id("alice"), "approve").is_ok());
    assert!(permit_approve(&config, &id(OPERATOR), "approve").is_ok());
    assert!(permit_approve(&config, &id("reporter"), "approve").is_err());
    assert!(matches!(
        permit_approve(&config, &Identity::anonymous(), "approve"),
        Err(crate::Error::Unauthenticated(_))
    ));

    let required = self::config(json!({ "auth": { "required": true } }));
    assert!(
        permit_read(&config, &id("reporter"), "workflows").is_ok(),
        "open without auth"
    );
    assert!(permit_read(&required, &id("reporter"), "workflows").is_err());
    assert!(permit_read(&required, &id("writer"), "workflows").is_ok());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let config = config(json!({}));
    let text = format!("{config:?}");
    assert!(
        !text.contains("rep-secret") && !text.contains("op-secret"),
        "{text}"
    );
}

#[test]
fn stdio_speaks_for_the_configured_client_only() {
    assert_eq!(Identity::stdio(&config(json!({}))), Identity::anonymous());
    let configured = config(json!({ "auth": { "stdio_client": "writer" } }));
    let identity = Identity::stdio(&configured);
    assert_eq!(
        (identity.name.as_str(), &identity.proof),
        ("writer", &Proof::Stdio)
    );
}

#[test]
fn listening_beyond_loopback_needs_required_authentication() {
    let open = config(json!({}));
    let loopback = "127.0.0.1:8080".parse().expect("address");
    let everywhere = "0.0.0.0:8080".parse().expect("address");
    assert!(startup_check(&open, &[loopback]).is_ok_and(|w| w.is_empty()));
    let refused = startup_check(&open, &[loopback, everywhere]).unwrap_err();
    assert!(refused.contains("0.0.0.0:8080"), "{refused}");
    let required = config(json!({
        "auth": { "required": true }, "listen": { "tls_terminated_in_front": true }
    }));
    assert!(startup_check(&required, &[everywhere]).is_ok());
    let mut no_control = json!({
        "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["a"] } }
    });
    no_control["clients"] = json!({});
    let no_control = Config::from_slice(no_control.to_string().as_bytes()).expect("valid");
    assert_eq!(
        startup_check(&no_control, &[loopback]).map(|w| w.len()),
        Ok(1),
        "warns"
    );
}

#[test]
fn configuration_problems_carry_their_paths() {
    let problems = |extra: serde_json::Value| {
        let mut v = json!({
            "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["a"] } },
            "clients": { "a": { "token": "same" }, "b": { "token": "same", "act_for": ["nobody"] } }
        });
        for (k, val) in extra.as_object().into_iter().flatten() {
            v[k] = val.clone();
        }
        match Config::from_slice(v.to_string().as_bytes()) {
            Err(e) => e
                .problems()
                .iter()
                .map(|p| p.path.clone())
                .collect::<Vec<_>>(),
            Ok(_) => Vec::new(),
        }
    };
    let found = problems(
        json!({ "auth": { "jwt": { "issuer": "i", "jwks_url": "ftp://x" }, "stdio_client": "ghost" } }),
    );
    for path in [
        "clients.b.token",
        "clients.b.act_for[0]",
        "auth.jwt.audience",
        "auth.stdio_client",
    ] {
        assert!(found.iter().any(|p| p == path), "{path} in {found:?}");
    }
    let found = problems(
        json!({ "listen": { "http_limits": { "header_timeout": "0s", "max_connections": 0 } } }),
    );
    assert!(
        found
            .iter()
            .any(|p| p == "listen.http_limits.header_timeout"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p == "listen.http_limits.max_connections"),
        "{found:?}"
    );
}

#[test]
fn an_unlisted_jwt_subject_is_its_own_bounded_identity() {
    use crate::config::{caller_name, jwt_identity};
    assert_eq!(jwt_identity("agent-9"), "jwt:agent-9");
    let odd = [
        "a b",
        "a_b",
        "anonymous (no credential)",
        "x/../y",
        "",
        &"s".repeat(100_000),
        &"s".repeat(100_001),
    ];
    let identities: Vec<String> = odd.iter().map(|s| jwt_identity(s)).collect();
    for (subject, identity) in odd.iter().zip(&identities) {
        assert!(identity.starts_with("jwt:"), "{identity}");
        assert!(identity.len() <= 4 + 64 + 17, "{} chars", identity.len());
        let caller = Identity {
            name: identity.clone(),
            proof: Proof::Jwt {
                subject: (*subject).to_owned(),
            },
        }
        .caller("as \"writer\"");
        assert_eq!(caller_name(&caller), identity, "one word: {caller}");
    }
    let distinct: std::collections::HashSet<&String> = identities.iter().collect();
    assert_eq!(distinct.len(), identities.len(), "{identities:?}");

    let id = |name: &str| Identity {
        name: name.into(),
        proof: Proof::Jwt {
            subject: name.into(),
        },
    };
    let config = config(json!({}));
    let theirs = id("jwt:bob").caller("");
    assert!(permit_owner(&config, &id("jwt:eve"), "wf-1", &theirs).is_err());
    let anonymous = Identity::anonymous().caller("");
    assert!(permit_owner(&config, &id("jwt:eve"), "wf-1", &anonymous).is_err());
    assert!(permit_owner(&config, &Identity::anonymous(), "wf-1", &theirs).is_err());
    assert!(permit_owner(&config, &id("jwt:bob"), "wf-1", &theirs).is_ok());
}

#[test]
fn unlisted_jwt_subjects_get_the_default_clients_allow_list_or_none() {
    let jwt = |default: Option<&str>| {
        let mut jwt = json!({ "issuer": "i", "audience": "a", "jwks_file": "/nonexistent" });
        if let Some(name) = default {
            jwt["default_client"] = json!(name);
        }
        config(json!({ "auth": { "jwt": jwt } }))
    };
    let caller = "jwt:agent-9 (jwt agent-9)";
    let without = jwt(None);
    let allowed = without.allowed_for(caller, None).expect("restricted");
    assert!(allowed.tools.is_empty(), "{allowed:?}");
    assert!(allowed.source.contains("auth.jwt.default_client"));
    let with = jwt(Some("reporter"));
    let allowed = with.allowed_for(caller, None).expect("restricted");
    assert_eq!(
        allowed
            .tools
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert!(allowed.source.contains("reporter"), "{}", allowed.source);
    assert!(
        jwt(Some("writer")).allowed_for(caller, None).is_none(),
        "a default client with every tool"
    );
    assert!(
        with.allowed_for("reporter (token)", None).is_some(),
        "the default client itself is unchanged"
    );
}

#[test]
fn the_jwt_default_client_must_exist_and_no_client_takes_a_jwt_name() {
    let problems = |clients: serde_json::Value, default: &str| {
        let v = json!({
            "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["a"] } },
            "clients": clients,
            "auth": { "jwt": { "issuer": "i", "audience": "a", "jwks_file": "/x", "default_client": default } }
        });
        match Config::from_slice(v.to_string().as_bytes()) {
            Err(e) => e
                .problems()
                .iter()
                .map(|p| p.path.clone())
                .collect::<Vec<_>>(),
            Ok(_) => Vec::new(),
        }
    };
    assert_eq!(
        problems(json!({ "staff": { "tools": ["a"] } }), "ghost"),
        ["auth.jwt.default_client"]
    );
    assert_eq!(
        problems(json!({ "jwt:bob": { "tools": ["a"] } }), "jwt:bob"),
        ["clients.jwt:bob"]
    );
    assert!(problems(json!({ "staff": { "tools": ["a"] } }), "staff").is_empty());
}

#[tokio::test]
async fn a_verified_certificate_names_its_client_and_a_token_decides_alone() {
    let config = config(json!({
        "listen": { "tls": { "cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem" } },
        "clients": {
            "robot": { "tools": ["a"], "tls_subject": "robot-1" },
            "writer": { "tools": ["*"], "token": "wri-secret" }
        }
    }));
    let auth = Authenticator::new();
    let certificate = |subject: Option<&str>| crate::tls::PeerCertificate {
        subject: subject.map(str::to_owned),
    };
    let robot = auth
        .identify_with_certificate(&config, None, Some(&certificate(Some("robot-1"))))
        .await
        .expect("a listed subject");
    assert_eq!(robot.name, "robot");
    assert_eq!(robot.caller(""), "robot (certificate robot-1)");
    let token_wins = auth
        .identify_with_certificate(
            &config,
            Some("wri-secret"),
            Some(&certificate(Some("robot-1"))),
        )
        .await
        .expect("the token");
    assert_eq!(token_wins.name, "writer");
    let unlisted = auth
        .identify_with_certificate(&config, None, Some(&certificate(Some("stranger"))))
        .await
        .expect_err("no client lists it");
    assert!(unlisted.to_string().contains("stranger"), "{unlisted}");
    assert!(matches!(
        auth.identify_with_certificate(&config, None, Some(&certificate(None)))
            .await,
        Err(AuthError::CertificateWithoutSubject)
    ));
    let nobody = auth.identify_with_certificate(&config, None, None).await;
    assert_eq!(nobody.map(|i| i.name).ok().as_deref(), Some(ANONYMOUS));
}

#[test]
fn listening_beyond_loopback_needs_tls_or_says_it_ends_in_front() {
    let everywhere = "0.0.0.0:0".parse().expect("address");
    let plain = config(json!({ "auth": { "required": true } }));
    let refused = startup_check(&plain, &[everywhere]).unwrap_err();
    for needed in [
        "0.0.0.0:0",
        "without TLS",
        "listen",
        "tls_terminated_in_front",
    ] {
        assert!(refused.contains(needed), "{needed}: {refused}");
    }
    let with_tls = config(json!({
        "auth": { "required": true },
        "listen": { "tls": { "cert_file": "s.pem", "key_file": "s.key" } }
    }));
    assert!(startup_check(&with_tls, &[everywhere]).is_ok());
}
