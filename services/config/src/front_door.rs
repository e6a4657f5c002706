//! `frontDoor`: main's HTTP/JSON API, gRPC-Web and console, on the gRPC port.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::requests::RateLimitConfig;
use crate::rules::is_absolute_http_url;
use crate::{Problems, Validate};

/// The HTTP side of main's port: JSON routes from the contract, Server-Sent Events, gRPC-Web,
/// the OpenAPI document and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FrontDoorConfig {
    /// Serve HTTP/1.1 and HTTP/2 JSON, gRPC-Web and the console beside gRPC. Default `true`.
    pub enabled: bool,
    /// Serve the web console at `/`. Default `true`.
    pub console: bool,
    /// Largest JSON request body (413 beyond). Bytes, `1024..=16777216`; default `1048576`.
    pub max_body_bytes: usize,
    /// Largest total size of an HTTP request's headers (431 beyond). Bytes,
    /// `1024..=65536`; default `16384`.
    pub max_header_bytes: usize,
    /// Browser origins allowed to call the API from other sites (`https://app.example.com`),
    /// at most 32. Default: none, so CORS is off and only the console's own origin works.
    pub cors_allowed_origins: Vec<String>,
    /// Proxies (CIDRs, `10.0.0.0/8`) whose `X-Forwarded-For` names the client; from anyone
    /// else the header is ignored and the peer address is the client. At most 64. Default:
    /// none.
    pub trusted_proxies: Vec<String>,
    /// Calls per client address to the rpcs open without a token (sign up, log in, refresh,
    /// log out, client credentials), on HTTP, gRPC-Web and gRPC alike. Default
    /// `{"perSecond": 5, "burst": 20}`.
    pub public_rate: RateLimitConfig,
    /// Where the worker's admin API (`appstack.worker.v1.WorkerAdmin`) is served when this
    /// process does not serve it (`http://stack-worker:8443`); unset: not forwarded. (An
    /// option, not an empty string: Kubernetes 1.20 reads an empty string in a custom
    /// resource as null and refuses it.)
    pub worker_endpoint: Option<String>,
}

impl Default for FrontDoorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            console: true,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            cors_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            public_rate: RateLimitConfig {
                per_second: 5,
                burst: 20,
            },
            worker_endpoint: None,
        }
    }
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => width,
        };
        (prefix <= width).then_some(Self { network, prefix })
    }

    /// Whether `address` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// Whether `text` is a bare origin: `http(s)://host[:port]`, nothing after.
fn is_origin(text: &str) -> bool {
    is_absolute_http_url(text)
        && text
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#', '@']))
}

impl Validate for FrontDoorConfig {
    fn check(&self, p: &mut Problems) {
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            p.push("maxBodyBytes", "must be between 1024 and 16777216");
        }
        if !(1024..=65536).contains(&self.max_header_bytes) {
            p.push("maxHeaderBytes", "must be between 1024 and 65536");
        }
        p.field("corsAllowedOrigins", |p| {
            if self.cors_allowed_origins.len() > 32 {
                p.here("at most 32 origins");
            }
            for (i, origin) in self.cors_allowed_origins.iter().enumerate() {
                if !is_origin(origin) {
                    p.push(
                        &i.to_string(),
                        format_args!("{origin:?} is not an origin (http(s)://host[:port])"),
                    );
                }
            }
        });
        p.field("trustedProxies", |p| {
            if self.trusted_proxies.len() > 64 {
                p.here("at most 64 networks");
            }
            for (i, network) in self.trusted_proxies.iter().enumerate() {
                if Cidr::parse(network).is_none() {
                    p.push(
                        &i.to_string(),
                        format_args!("{network:?} is not an address or CIDR"),
                    );
                }
            }
        });
        p.field("publicRate", |p| self.public_rate.check(p));
        if let Some(endpoint) = &self.worker_endpoint
            && !is_absolute_http_url(endpoint)
        {
            p.push("workerEndpoint", "must be an absolute http(s) URL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let private = Cidr::parse("10.0.0.0/8").unwrap_or_else(|| panic!("parse"));
        assert!(private.contains("10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(private.contains("::ffff:10.9.9.9".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!private.contains("11.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))));
        let one = Cidr::parse("::1").unwrap_or_else(|| panic!("parse"));
        assert!(one.contains("::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(
            Cidr::parse("0.0.0.0/0").is_some_and(
                |all| all.contains("8.8.8.8".parse().unwrap_or_else(|e| panic!("{e}")))
            )
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "::/129",
            "1.2.3.4/+1",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let config = FrontDoorConfig {
            cors_allowed_origins: vec![
                "https://ok.example".into(),
                "https://x.example/path".into(),
            ],
            trusted_proxies: vec!["10.0.0.0/8".into(), "nope".into()],
            worker_endpoint: Some("worker:8443".into()),
            ..FrontDoorConfig::default()
        };
        let mut p = Problems::default();
        config.check(&mut p);
        let text = format!("{p:?}");
        assert!(text.contains("corsAllowedOrigins.1"), "{text}");
        assert!(text.contains("trustedProxies.1"), "{text}");
        assert!(text.contains("workerEndpoint"), "{text}");
        let mut ok = Problems::default();
        FrontDoorConfig::default().check(&mut ok);
        assert_eq!(format!("{ok:?}"), format!("{:?}", Problems::default()));
    }
}
