//! The Postgres mirror on a shared vault: delivered by the leader only, and by the next one
//! after a failover.

use std::time::{Duration, Instant};

use reqwest::Method;

use super::support::{Cluster, FAILOVER_SECS, Options};

/// The token the mirror's table holds for `user`, if any.
fn mirrored(c: &Cluster, user: &str) -> Option<String> {
    let sql = format!(
        "SELECT access_token FROM \"{}\".tokenbot_tokens WHERE user_id = $1 AND broker = 'kite'",
        c.schema
    );
    c.rt.block_on(async {
        let client = crate::mirror::support::connect(&c.db_url).await;
        match client.query_opt(&sql, &[&user]).await {
            Ok(row) => row.and_then(|r| r.get::<_, Option<String>>(0)),
            Err(_) => None, // the table is not there yet
        }
    })
}

/// Poll until `check` holds, for at most `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Whether node `i`'s mirror holds a connection, by `/health/detailed`.
fn mirror_connected(c: &Cluster, i: usize) -> bool {
    let (status, body) = c.call(i, Method::GET, "/health/detailed");
    status == 200 && body["mirror"]["connected"] == true
}

#[test]
fn only_the_leader_mirrors_and_the_next_leader_takes_the_mirror_over() {
    let options = Options {
        accounts: 2,
        auto_refresh: false,
        mirror: true,
        ..Options::default()
    };
    let Some(mut c) = Cluster::new("mirror", options) else {
        return;
    };
    let nodes = c.start_nodes(3);
    let leader = c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    assert!(
        eventually(Duration::from_secs(10), || mirror_connected(&c, leader)),
        "the leader's mirror connects"
    );
    for &i in nodes.iter().filter(|&&i| i != leader) {
        assert!(!mirror_connected(&c, i), "follower {i} mirrors");
    }

    // A token stored through a follower reaches the table through the leader's mirror.
    let follower = *nodes.iter().find(|&&i| i != leader).unwrap();
    let first = c.accounts[0].user.clone();
    let (status, body) = c.refresh(follower, &first);
    assert_eq!((status, &body["successful"]), (200, &1.into()), "{body}");
    let served = c.token(follower, &first).expect("a token");
    assert!(
        eventually(Duration::from_secs(10), || mirrored(&c, &first).as_deref()
            == Some(served.as_str())),
        "the first token mirrored"
    );

    // The leader dies: the next one mirrors what is stored from then on.
    c.kill(leader);
    let next = c.wait_for_one_leader(Duration::from_secs(FAILOVER_SECS + 10));
    assert_ne!(next, leader);
    let second = c.accounts[1].user.clone();
    let (status, body) = c.refresh(next, &second);
    assert_eq!((status, &body["successful"]), (200, &1.into()), "{body}");
    let served = c.token(next, &second).expect("a token");
    assert!(
        eventually(Duration::from_secs(10), || mirrored(&c, &second).as_deref()
            == Some(served.as_str())),
        "the second token mirrored by the new leader"
    );
    assert!(mirror_connected(&c, next));
    for i in c.running().into_iter().filter(|&i| i != next) {
        assert!(!mirror_connected(&c, i), "follower {i} mirrors");
    }
}
