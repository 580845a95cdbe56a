//! One leader among the nodes; failover on its SIGKILL, also in the middle of its catch-up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;

use super::support::{Cluster, FAILOVER_SECS, Options, gauge};

/// The longest failover accepted: the configured bound, plus what this test's polling (every
/// 50 ms, `/health` of each node) adds.
fn failover_bound() -> Duration {
    Duration::from_secs(FAILOVER_SECS) + Duration::from_millis(500)
}

/// Exactly `leader` leads among the running nodes, at every check over `over`.
fn assert_sole_leader(c: &Cluster, leader: usize, over: Duration) {
    let until = Instant::now() + over;
    loop {
        assert_eq!(
            c.leaders(),
            vec![leader],
            "roles: {:?}{}",
            c.roles(),
            c.logs_tail(15)
        );
        if Instant::now() > until {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_of_three_nodes_leads_and_another_takes_over_within_failover_secs_of_its_sigkill() {
    let Some(mut c) = Cluster::new("failover", Options::default()) else {
        return;
    };
    c.start_nodes(3);
    let leader = c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    assert_sole_leader(&c, leader, Duration::from_secs(1));
    // /health, /health/detailed and /metrics of every node agree on who leads.
    for i in c.running() {
        let (role, flag) = if i == leader {
            ("leader", 1.0)
        } else {
            ("follower", 0.0)
        };
        let (status, health) = c.health(i).unwrap();
        assert_eq!(
            (status, health["status"].as_str(), health["role"].as_str()),
            (200, Some("ok"), Some(role)),
            "node {i}: {health}"
        );
        let (status, detailed) = c.call(i, Method::GET, "/health/detailed");
        assert_eq!(status, 200, "node {i}: {detailed}");
        assert_eq!(detailed["role"], role, "node {i}: {detailed}");
        assert_eq!(detailed["degraded"], false, "node {i}: {detailed}");
        let (status, metrics) = c.metrics(i);
        assert_eq!(status, 200, "node {i}: {metrics}");
        assert_eq!(gauge(&metrics, "tokenbot_leader"), Some(flag), "node {i}");
        assert_eq!(
            gauge(&metrics, "tokenbot_vault_degraded"),
            Some(0.0),
            "node {i}"
        );
    }

    let killed = Instant::now();
    c.kill(leader);
    let next = c.wait_for_one_leader(failover_bound() + Duration::from_secs(5));
    let failover = killed.elapsed();
    eprintln!(
        "failover: node {next} leads {} ms after node {leader} was killed (bound {FAILOVER_SECS} s)",
        failover.as_millis()
    );
    assert!(
        failover <= failover_bound(),
        "node {next} took over {} ms after the SIGKILL, more than failover_secs = {FAILOVER_SECS}",
        failover.as_millis()
    );
    assert_sole_leader(&c, next, Duration::from_secs(1));

    // The old leader comes back as a follower: still one leader among three.
    c.restart(leader);
    assert_eq!(c.role(leader).as_deref(), Some("follower"));
    assert_sole_leader(&c, next, Duration::from_millis(FAILOVER_SECS * 1000 / 2));
    assert_eq!(c.running().len(), 3);
}

#[test]
fn killing_the_leader_amid_fifty_logins_leaves_every_account_logged_in_no_overlap_no_step_reused() {
    const ACCOUNTS: usize = 50;
    const CONCURRENCY: u32 = 4;
    let options = Options {
        accounts: ACCOUNTS,
        concurrency: CONCURRENCY,
        ..Options::default()
    };
    let Some(mut c) = Cluster::new("leader_crash", options) else {
        return;
    };
    // About half a second per login (8 requests), 4 at a time: the catch-up lasts several seconds.
    c.kite.recorder().set_latency(Duration::from_millis(60));
    c.start_nodes(3);
    let leader = c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    // Kill the leader once its catch-up is well under way, with logins in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    let issued = loop {
        let recorder = c.kite.recorder();
        let issued = recorder.requests_with_status("/session/token", 200);
        if issued >= 8 && recorder.logins_in_flight() > 0 {
            break issued;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's catch-up did not get going ({issued} tokens issued in 30 s){}",
            c.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    c.kill(leader);
    let killed = Instant::now();
    assert!(
        (issued as usize) < ACCOUNTS,
        "the catch-up had finished before the SIGKILL: nothing was tested"
    );
    let next = c.wait_for_one_leader(failover_bound() + Duration::from_secs(5));
    eprintln!(
        "leader crash: {issued}/{ACCOUNTS} tokens issued at the SIGKILL; node {next} leads after {} ms",
        killed.elapsed().as_millis()
    );
    // The new leader's catch-up logs the rest in (a login the dead one had sent a code for waits
    // for the next TOTP step: up to 30 s).
    c.wait_for_valid_tokens(next, Duration::from_secs(60));
    eprintln!(
        "leader crash: every account valid {} ms after the SIGKILL",
        killed.elapsed().as_millis()
    );
    for i in c.running() {
        for account in &c.accounts {
            assert!(
                c.has_valid_token(i, account),
                "node {i} serves no valid token for {}",
                account.user
            );
        }
    }

    let recorder = c.kite.recorder();
    for account in &c.accounts {
        let uses = recorder.totp_uses(&account.kite.user_id);
        let steps: Vec<u64> = uses.iter().filter_map(|u| u.step).collect();
        let distinct: BTreeSet<u64> = steps.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            steps.len(),
            "{}: a TOTP step was sent twice: {uses:?}",
            account.user
        );
        assert!(
            uses.iter().all(|u| u.accepted),
            "{}: a code was refused: {uses:?}",
            account.user
        );
    }
    let concurrent = recorder.concurrent_logins_per_account();
    let overlapping: Vec<_> = concurrent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        overlapping.is_empty(),
        "accounts with two logins in flight at once: {overlapping:?}"
    );
    assert_eq!(recorder.max_concurrent_logins_per_account(), 1);
    // Only the logins the dead leader had in flight were done again.
    let passwords: usize = (c.accounts.iter())
        .map(|a| recorder.password_posts(&a.kite.user_id))
        .sum();
    eprintln!("leader crash: {passwords} password POSTs for {ACCOUNTS} accounts");
    assert!(
        passwords <= ACCOUNTS + CONCURRENCY as usize,
        "{passwords} logins for {ACCOUNTS} accounts, at most {CONCURRENCY} of them in flight at the SIGKILL"
    );
}
