//! The tests of `api::auth`, kept together: they share one configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use jsonwebtoken::Algorithm;
use secrecy::SecretString;

use super::client_ip::X_FORWARDED_FOR;
use super::keys::sha256;
use super::*;

const SECRET: &str = "s3cret-of-thirty-two-bytes-0123456";

fn auth_with(proxies: &[&str]) -> Auth {
    let mut config = AuthConfig {
        jwt_secret: Some(SecretString::from(SECRET)),
        api_key: Some(SecretString::from("env-key")),
        ..AuthConfig::default()
    };
    config
        .api_keys
        .insert("backend".into(), hex::encode(sha256("backend-key")));
    let proxies: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
    Auth::from_config(&config, &proxies)
}

fn auth() -> Auth {
    auth_with(&[])
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Request parts from `peer` with these `X-Forwarded-For` header lines.
fn from(peer: &str, forwarded: &[&str]) -> Parts {
    let mut request = axum::http::Request::builder();
    for value in forwarded {
        request = request.header(X_FORWARDED_FOR, *value);
    }
    let (mut parts, ()) = request.body(()).unwrap().into_parts();
    parts
        .extensions
        .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
    parts
}

#[test]
fn keys_are_found_by_digest_and_named() {
    let auth = auth();
    assert_eq!(auth.key_name("backend-key").map(|n| &**n), Some("backend"));
    assert_eq!(auth.key_name("env-key").map(|n| &**n), Some("env"));
    assert_eq!(auth.key_name("backend-kez"), None);
    assert_eq!(auth.key_name(""), None);
}

#[test]
fn failures_past_the_limit_are_answered_429_per_client() {
    let auth = auth();
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    for _ in 0..MAX_FAILURES {
        assert_eq!(auth.failures.record(a), None);
    }
    let wait = auth.failures.record(a).expect("past the limit");
    assert!(
        wait <= FAILURE_WINDOW && wait >= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(auth.failures.record(b), None);
}

#[test]
fn ipv6_clients_are_counted_by_their_slash_64() {
    let auth = auth();
    for n in 0..MAX_FAILURES {
        assert_eq!(
            auth.failures.record(ip(&format!("2001:db8:1:2::{n:x}"))),
            None
        );
    }
    assert!(auth.failures.record(ip("2001:db8:1:2:ffff::1")).is_some());
    assert_eq!(auth.failures.record(ip("2001:db8:1:3::1")), None);
}

#[test]
fn the_failure_counters_hold_a_bounded_number_of_clients() {
    let counts = FailureCounts::new(1_000);
    for n in 0..20_000u32 {
        counts.record(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
    }
    // quick_cache bounds each shard; the total may pass the capacity by a shard's rounding.
    assert!(counts.counts.len() <= 1_100, "{}", counts.counts.len());
    // A client that keeps failing stays counted through the flood of one-off addresses.
    let persistent = ip("192.0.2.1");
    for n in 0..20_000u32 {
        counts.record(persistent);
        counts.record(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)));
    }
    assert!(counts.record(persistent).is_some());
}

#[test]
fn a_jwt_secret_under_32_bytes_that_slipped_past_validation_accepts_no_jwt() {
    let config = AuthConfig {
        jwt_secret: Some(SecretString::from("")),
        ..AuthConfig::default()
    };
    let auth = Auth::from_config(&config, &[]);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "u1", "exp": 4_102_444_800u64}),
        &jsonwebtoken::EncodingKey::from_secret(b""),
    )
    .unwrap();
    assert!(auth.jwt_user(&token).is_err());
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let auth = auth_with(&["10.0.0.0/8", "192.0.2.7"]);
    // Untrusted peer: its header is the client's own invention.
    assert_eq!(
        auth.client_ip(&from("198.51.100.1:5000", &["203.0.113.9"])),
        ip("198.51.100.1")
    );
    // Trusted proxy: the nearest untrusted hop, whatever the client put left of it.
    assert_eq!(
        auth.client_ip(&from("10.1.2.3:5000", &["6.6.6.6, 203.0.113.9, 192.0.2.7"])),
        ip("203.0.113.9")
    );
    // Header lines read as one list, the last line nearest.
    assert_eq!(
        auth.client_ip(&from("10.1.2.3:5000", &["203.0.113.9", "10.9.9.9"])),
        ip("203.0.113.9")
    );
    // No header, or only proxies in it: the last hop known.
    assert_eq!(auth.client_ip(&from("10.1.2.3:5000", &[])), ip("10.1.2.3"));
    assert_eq!(
        auth.client_ip(&from("10.1.2.3:5000", &["10.4.4.4"])),
        ip("10.4.4.4")
    );
    // Garbage stops the walk at the hop before it; ports and mapped addresses are read.
    assert_eq!(
        auth.client_ip(&from("10.1.2.3:5000", &["203.0.113.9, unknown"])),
        ip("10.1.2.3")
    );
    assert_eq!(
        auth.client_ip(&from("[::ffff:10.1.2.3]:5000", &["203.0.113.9:4711"])),
        ip("203.0.113.9")
    );
}
