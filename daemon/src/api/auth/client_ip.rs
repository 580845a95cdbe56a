//! The address a request comes from, for the failure counters: the peer's, or behind trusted
//! proxies the nearest `X-Forwarded-For` hop that is not one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

use crate::config::parse_trusted_proxy;

pub(super) const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
pub(super) struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
}

impl TrustedProxies {
    /// An entry that is no CIDR is left out with an error logged.
    pub(super) fn from_config(trusted_proxies: &[String]) -> TrustedProxies {
        let nets = trusted_proxies
            .iter()
            .filter_map(|proxy| match parse_trusted_proxy(proxy) {
                Ok(net) => Some(net),
                Err(e) => {
                    tracing::error!(%proxy, error = %e, "server.trusted_proxies entry ignored");
                    None
                }
            })
            .collect();
        TrustedProxies { nets }
    }

    /// See [`super::Auth::client_ip`].
    pub(super) fn client_ip(&self, parts: &Parts) -> IpAddr {
        let peer = peer_ip(parts).to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for value in parts.headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for hop in value.rsplit(',') {
                let hop = hop.trim();
                let Some(ip) = hop
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
                else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.trusted(client) {
                    return client;
                }
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}
