//! Who is on the other end of a request: the TCP peer, or, when that peer is one of our own
//! proxies (`TRUSTED_PROXIES`), the right-most address in `X-Forwarded-For` that is not. One
//! implementation for every service: ingest's platform-callback allow-list and every recorded
//! `source_ip`, token-api's logs and limits.
//!
//! `X-Forwarded-For` is believed only as far as our own proxies wrote it: each proxy appends the
//! address it received the request from, so walking from the right past the trusted ones finds
//! the first address no proxy of ours can vouch for. Anything left of it was written by the
//! client and is ignored. Without `TRUSTED_PROXIES` the header is never read.

use std::net::IpAddr;

use ipnet::IpNet;

/// A list of networks (`CIDR` or a bare address), as `TRUSTED_PROXIES` and
/// `CALLBACK_ALLOW_CIDRS` give them: comma-separated, whitespace ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Parses `10.0.0.0/8, 192.0.2.7, ::1`; an empty list is no network.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an address nor a CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl std::fmt::Display for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The client's address: `peer` itself, unless `peer` is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (or the left-most entry, when every one
/// is). An entry that is no address ends the walk at the last trusted hop: nothing left of a
/// damaged header can be believed.
pub fn client_addr<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &Networks,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(client) {
        return client;
    }
    for hop in forwarded_for.rev().map(str::trim).filter(|h| !h.is_empty()) {
        let Ok(hop) = parse_hop(hop) else {
            return client;
        };
        client = hop.to_canonical();
        if !trusted.contains(client) {
            return client;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, bracketed IPv6 or with a port as some proxies write.
fn parse_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>().or_else(|e| {
        hop.parse::<std::net::SocketAddr>()
            .map(|s| s.ip())
            .or_else(|_| {
                hop.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .ok_or(e)?
                    .parse()
            })
    })
}

/// The client address of an actix request: its peer and every `X-Forwarded-For` header, in
/// order, through [`client_addr`]. `None` only when actix knows no peer (a test request).
pub fn of_request(req: &actix_web::HttpRequest, trusted: &Networks) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    Some(client_addr(peer, hops.into_iter(), trusted))
}

/// The clap value parser for a list of networks.
pub fn networks(list: &str) -> Result<Networks, String> {
    Networks::parse(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(peer: &str, xff: &str, trusted: &str) -> IpAddr {
        client_addr(ip(peer), xff.split(','), &Networks::parse(trusted).unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        assert_eq!(client("203.0.113.9", "198.51.100.1", ""), ip("203.0.113.9"));
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_address() {
        let c = client("203.0.113.9", "198.51.100.1", "10.0.0.0/8");
        assert_eq!(c, ip("203.0.113.9"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client_and_what_it_wrote_is_ignored() {
        // The client forged "1.1.1.1"; its real address 198.51.100.7 was appended by our proxy.
        let c = client("10.0.0.2", "1.1.1.1, 198.51.100.7, 10.0.0.1", "10.0.0.0/8");
        assert_eq!(c, ip("198.51.100.7"));
    }

    #[test]
    fn every_hop_trusted_gives_the_left_most_and_a_damaged_hop_stops_the_walk() {
        assert_eq!(
            client("10.0.0.2", "10.0.0.3, 10.0.0.1", "10.0.0.0/8"),
            ip("10.0.0.3")
        );
        assert_eq!(
            client("10.0.0.2", "1.1.1.1, junk, 10.0.0.1", "10.0.0.0/8"),
            ip("10.0.0.1")
        );
        assert_eq!(client("10.0.0.2", "", "10.0.0.0/8"), ip("10.0.0.2"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        assert_eq!(
            client("10.0.0.2", "198.51.100.7:5123", "10.0.0.0/8"),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.2", "[2001:db8::1]", "10.0.0.0/8"),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("::ffff:10.0.0.2", "2001:db8::1", "10.0.0.2"),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn networks_parse_addresses_and_cidrs_and_name_what_is_wrong() {
        let n = Networks::parse(" 192.0.2.0/24, 2001:db8::1 ,").unwrap();
        assert!(n.contains(ip("192.0.2.200")) && n.contains(ip("2001:db8::1")));
        assert!(!n.contains(ip("192.0.3.1")));
        let err = Networks::parse("192.0.2.0/33").unwrap_err();
        assert!(err.contains("192.0.2.0/33"), "{err}");
        assert!(Networks::parse("").unwrap().is_empty());
    }
}
