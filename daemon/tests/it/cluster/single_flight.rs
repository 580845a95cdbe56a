//! A refresh of one account asked of every node at once: one login cluster-wide.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reqwest::Method;

use super::support::{Cluster, FAILOVER_SECS, Options, call};

/// A paused account's cluster: no catch-up logs it in, a refresh naming its user does.
fn paused_cluster(test: &str) -> Option<(Cluster, Vec<usize>)> {
    let options = Options {
        auto_refresh: false,
        ..Options::default()
    };
    let mut c = Cluster::new(test, options)?;
    let nodes = c.start_nodes(3);
    c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    Some((c, nodes))
}

/// POST `path` on every one of `nodes` at the same instant (threads behind a barrier): each
/// node's answer and how long it took.
fn ask_all_at_once(
    c: &Cluster,
    nodes: &[usize],
    path: &str,
) -> Vec<(usize, u16, serde_json::Value, Duration)> {
    let barrier = Arc::new(Barrier::new(nodes.len()));
    std::thread::scope(|s| {
        let asks: Vec<_> = (nodes.iter())
            .map(|&i| {
                let (handle, http, addr) = (c.handle(), c.client(), c.addr(i).to_owned());
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    let asked = Instant::now();
                    let (status, body) = call(&handle, &http, &addr, Method::POST, path);
                    (i, status, body, asked.elapsed())
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    })
}

#[test]
fn a_refresh_of_one_account_asked_of_three_nodes_at_once_logs_it_in_once_and_all_report_it() {
    let Some((c, nodes)) = paused_cluster("single_flight") else {
        return;
    };
    let account = c.accounts[0].clone();
    // Every node has read (and cached) that there is no token yet.
    for &i in &nodes {
        assert_eq!(c.token(i, &account.user), None, "node {i}");
    }
    let recorder = c.kite.recorder();
    assert_eq!(recorder.password_posts(&account.kite.user_id), 0);
    // Each request 150 ms: the login lasts over a second, so all three asks meet it in flight.
    recorder.set_latency(Duration::from_millis(150));

    let path = format!("/api/integration/tokens/refresh/{}", account.user);
    let answers = ask_all_at_once(&c, &nodes, &path);
    recorder.set_latency(Duration::ZERO);
    for (i, status, body, took) in &answers {
        eprintln!(
            "single flight: node {i} answered {status} in {} ms",
            took.as_millis()
        );
        assert_eq!(*status, 200, "node {i}: {body}");
        assert_eq!(
            (&body["successful"], &body["failed"], &body["total"]),
            (&1.into(), &0.into(), &1.into()),
            "node {i}: {body}"
        );
        assert_eq!(body["results"][0]["outcome"], "success", "node {i}: {body}");
    }
    assert_eq!(
        recorder.password_posts(&account.kite.user_id),
        1,
        "password POSTs cluster-wide"
    );
    assert_eq!(recorder.requests_with_status("/session/token", 200), 1);
    assert_eq!(recorder.max_concurrent_logins_per_account(), 1);

    // Every node then serves that one new token (the cache follows within a second).
    let deadline = Instant::now() + Duration::from_secs(2);
    let tokens = loop {
        let tokens: Vec<Option<String>> =
            (nodes.iter()).map(|&i| c.token(i, &account.user)).collect();
        if tokens.iter().all(|t| t.is_some() && *t == tokens[0]) || Instant::now() > deadline {
            break tokens;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "the nodes serve different tokens"
    );
    let token = tokens[0].as_deref().expect("a token");
    assert!(c.kite.token_is_valid(&account.kite.api_key, token));
}

#[test]
fn a_wrong_password_found_through_one_node_is_never_sent_again_by_any_node() {
    let Some((c, nodes)) = paused_cluster("wrong_password") else {
        return;
    };
    let account = c.accounts[0].clone();
    // The broker's password changed: the stored one is wrong now.
    let mut changed = account.kite.clone();
    changed.password = "changed-at-the-broker".into();
    c.kite.add_user(changed);
    let recorder = c.kite.recorder();
    recorder.set_latency(Duration::from_millis(150));

    // Asked of all three at once: one password POST, and every answer is its failure.
    let path = format!("/api/integration/tokens/refresh/{}", account.user);
    let answers = ask_all_at_once(&c, &nodes, &path);
    recorder.set_latency(Duration::ZERO);
    for (i, status, body, _) in &answers {
        assert_eq!(*status, 200, "node {i}: {body}");
        assert_eq!(body["successful"], 0, "node {i}: {body}");
        let class = body["results"][0]["error_class"]
            .as_str()
            .unwrap_or_default();
        assert!(
            class == "invalid_credentials" || class == "needs_attention",
            "node {i}: {body}"
        );
    }
    assert_eq!(recorder.password_posts(&account.kite.user_id), 1);

    // Asked again of each node, one after another: none sends it.
    for &i in &nodes {
        let (status, body) = c.refresh(i, &account.user);
        assert_eq!(status, 200, "node {i}: {body}");
        assert_eq!(
            body["results"][0]["error_class"], "needs_attention",
            "node {i}: {body}"
        );
    }
    assert_eq!(
        recorder.password_posts(&account.kite.user_id),
        1,
        "the known-wrong password was sent again"
    );
    assert_eq!(recorder.max_concurrent_logins_per_account(), 1);
}
