//! Who the client is, by address, and the per-address limit of the rpcs open without a token.
//!
//! The peer address is the client unless the peer is a configured proxy; then the client is
//! the right-most `X-Forwarded-For` entry that is not a proxy (entries further left were
//! written by the client itself and prove nothing).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use appstack_config::{Cidr, RateLimitConfig};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;

/// The client address of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    trusted: Vec<Cidr>,
}

impl ClientAddress {
    /// Trusting `X-Forwarded-For` from `trusted` proxies only.
    pub fn new(trusted: Vec<Cidr>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(address))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn of(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else {
                // A malformed entry ends what can be believed.
                break;
            };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        Some(client)
    }
}

/// A token bucket per client address.
pub struct AddressLimit {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for AddressLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressLimit").finish_non_exhaustive()
    }
}

impl AddressLimit {
    /// `limit` per address.
    pub fn new(limit: &RateLimitConfig) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            buckets: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one call from `address`'s bucket, or says how long until one is free.
    ///
    /// # Errors
    ///
    /// The wait when the bucket is empty.
    pub fn take(&self, address: IpAddr) -> Result<(), Duration> {
        // Buckets of addresses not seen for a while are dropped now and then, so a spray of
        // addresses cannot grow the map without bound.
        if self.buckets.len() > 100_000 {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            value.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_proxies() {
        let none = ClientAddress::default();
        assert_eq!(
            none.of(Some(ip("203.0.113.9")), &forwarded("1.1.1.1")),
            Some(ip("203.0.113.9"))
        );
        let proxies = ClientAddress::new(vec![
            Cidr::parse("10.0.0.0/8").unwrap_or_else(|| panic!("cidr")),
        ]);
        assert_eq!(
            proxies.of(
                Some(ip("10.0.0.5")),
                &forwarded("6.6.6.6, 198.51.100.7, 10.1.1.1")
            ),
            Some(ip("198.51.100.7")),
            "the right-most address that is not a proxy; what the client wrote is ignored"
        );
        assert_eq!(
            proxies.of(Some(ip("10.0.0.5")), &HeaderMap::new()),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            proxies.of(Some(ip("10.0.0.5")), &forwarded("garbage, 10.2.2.2")),
            Some(ip("10.2.2.2")),
            "a malformed entry stops the walk at the last good hop"
        );
        assert_eq!(proxies.of(None, &HeaderMap::new()), None);
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let limit = AddressLimit::new(&RateLimitConfig {
            per_second: 1,
            burst: 2,
        });
        assert!(limit.take(ip("192.0.2.1")).is_ok());
        assert!(limit.take(ip("192.0.2.1")).is_ok());
        let wait = limit.take(ip("192.0.2.1")).err();
        assert!(
            wait.is_some_and(|w| w <= Duration::from_secs(1)),
            "{wait:?}"
        );
        assert!(
            limit.take(ip("192.0.2.2")).is_ok(),
            "another address is not affected"
        );
    }
}
