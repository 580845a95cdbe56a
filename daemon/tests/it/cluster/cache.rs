//! What a node has read follows the others' writes (LISTEN/NOTIFY), and is still served while the
//! node is cut off from PostgreSQL.

use std::time::{Duration, Instant};

use reqwest::Method;

use super::support::{Cluster, FAILOVER_SECS, Options, gauge};
use crate::mirror::support::{Proxy, upstream};

/// Poll every 50 ms until `check` holds; the time it took, or `None` after `within`.
fn poll(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_token_and_a_removed_account_reach_another_nodes_token_reads_within_a_second() {
    let options = Options {
        accounts: 2,
        ..Options::default()
    };
    let Some(mut c) = Cluster::new("cache", options) else {
        return;
    };
    let nodes = c.start_nodes(3);
    c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    let (a, b) = (nodes[0], nodes[1]);
    // B reads (and caches) both accounts' tokens.
    c.wait_for_valid_tokens(b, Duration::from_secs(40));
    let (refreshed, removed) = (c.accounts[0].clone(), c.accounts[1].clone());
    let old = c.token(b, &refreshed.user).unwrap();
    assert!(c.token(b, &removed.user).is_some());

    // A new token through A.
    let (status, body) = c.refresh(a, &refreshed.user);
    assert_eq!((status, &body["successful"]), (200, &1.into()), "{body}");
    let new = c.token(a, &refreshed.user).unwrap();
    assert_ne!(new, old, "node {a} serves the old token after its refresh");
    let delay = poll(Duration::from_secs(1), || {
        c.token(b, &refreshed.user).as_deref() != Some(old.as_str())
    });
    eprintln!(
        "cache: node {b} served the new token {:?} ms after node {a}'s refresh answered",
        delay.map(|d| d.as_millis())
    );
    assert!(
        delay.is_some(),
        "node {b} still serves the old token 1 s after node {a} stored a new one"
    );
    assert_eq!(c.token(b, &refreshed.user), Some(new.clone()));
    assert!(c.kite.token_is_valid(&refreshed.kite.api_key, &new));

    // An account removed through A.
    let (status, body) = c.call(
        a,
        Method::DELETE,
        &format!("/api/users/{}/accounts/kite", removed.user),
    );
    assert_eq!(status, 200, "{body}");
    let delay = poll(Duration::from_secs(1), || {
        c.token(b, &removed.user).is_none()
    });
    eprintln!(
        "cache: node {b} stopped serving the removed account {:?} ms after node {a} removed it",
        delay.map(|d| d.as_millis())
    );
    assert!(
        delay.is_some(),
        "node {b} still serves a token of an account node {a} removed 1 s ago"
    );
}

#[test]
fn a_node_cut_off_from_postgres_says_degraded_serves_the_tokens_it_read_and_recovers() {
    let Some(mut c) = Cluster::new("degraded", Options::default()) else {
        return;
    };
    let proxy = c.rt.block_on(Proxy::start(upstream(&c.db_url)));
    let others = c.start_nodes(2);
    c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    // Started after a leader is there: node C follows, and reaches PostgreSQL through the proxy.
    let via_proxy = proxy.url(&c.db_url);
    let cut_node = c.start_node_via(&via_proxy);
    let account = c.accounts[0].clone();
    c.wait_for_valid_tokens(cut_node, Duration::from_secs(40));
    let token = c.token(cut_node, &account.user).unwrap();
    let (_, health) = c.health(cut_node).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["role"].as_str()),
        (Some("ok"), Some("follower")),
        "{health}"
    );

    proxy.cut();
    let degraded = poll(Duration::from_secs(10), || {
        c.health(cut_node)
            .is_some_and(|(_, h)| h["status"] == "degraded")
    });
    eprintln!(
        "degraded: node {cut_node} said so {:?} ms after the cut",
        degraded.map(|d| d.as_millis())
    );
    assert!(
        degraded.is_some(),
        "node {cut_node}'s /health 10 s after the cut: {:?}{}",
        c.health(cut_node),
        c.logs_tail(15)
    );
    // The token it read is still served, and said to be so.
    for _ in 0..3 {
        assert_eq!(c.token(cut_node, &account.user), Some(token.clone()));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Checked at the end, so the recovery is tested whatever these say.
    let metrics_while_cut = c.metrics(cut_node);
    let detailed_while_cut = c.call(cut_node, Method::GET, "/health/detailed");
    for &i in &others {
        let (_, health) = c.health(i).unwrap();
        assert_eq!(health["status"], "ok", "node {i} was not cut: {health}");
    }

    proxy.restore();
    let recovered = poll(Duration::from_secs(15), || {
        c.health(cut_node).is_some_and(|(_, h)| h["status"] == "ok")
    });
    eprintln!(
        "degraded: node {cut_node} ok again {:?} ms after the proxy was restored",
        recovered.map(|d| d.as_millis())
    );
    assert!(
        recovered.is_some(),
        "node {cut_node}'s /health 15 s after the proxy came back: {:?}{}",
        c.health(cut_node),
        c.logs_tail(15)
    );
    let (_, metrics) = c.metrics(cut_node);
    assert_eq!(gauge(&metrics, "tokenbot_vault_degraded"), Some(0.0));
    assert_eq!(c.token(cut_node, &account.user), Some(token));

    let mut wrong = Vec::new();
    let (status, metrics) = metrics_while_cut;
    if status != 200 || gauge(&metrics, "tokenbot_vault_degraded") != Some(1.0) {
        wrong.push(format!(
            "GET /metrics while cut off: {status}, tokenbot_vault_degraded {:?}: {}",
            gauge(&metrics, "tokenbot_vault_degraded"),
            &metrics[..metrics.len().min(300)]
        ));
    }
    let (status, detailed) = detailed_while_cut;
    if status != 200 || detailed["degraded"] != true || detailed["role"] != "follower" {
        wrong.push(format!(
            "GET /health/detailed while cut off: {status} {}",
            &detailed.to_string()[..detailed.to_string().len().min(300)]
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
