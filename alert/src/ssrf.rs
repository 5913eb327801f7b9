//! The SSRF guard: webhook targets on loopback, link-local, private, shared, unique-local,
//! multicast and reserved addresses are refused, checked on the address actually connected to.
//!
//! Two doors lead to a connection and both are guarded: an IP-literal host (in any spelling
//! the WHATWG URL parser accepts: `127.1`, `2130706433`, `0x7f.1`, `[::ffff:7f00:1]`) is
//! checked after parsing, and a hostname goes through [`GuardedResolver`], which drops
//! forbidden addresses from the answer the HTTP client connects to, so a DNS rebinding
//! between a check and the connect cannot slip in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::AlertError;
use crate::redact::{redact, redact_url};

/// Why a target was refused; found in the error chain of a failed request.
#[derive(Debug, thiserror::Error)]
#[error(
    "webhook target {target} resolves to {address}, a loopback, private, link-local or reserved \
     address; start flowscope with --allow-private-webhooks to allow it"
)]
pub struct ForbiddenTarget {
    pub target: String,
    pub address: IpAddr,
}

/// Whether connecting to `ip` is refused without `--allow-private-webhooks`.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", including 0.0.0.0, which Linux connects to loopback
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64/10
        || a == 127
        || (a == 169 && b == 254) // link-local, including cloud metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast 224/4, reserved 240/4 and broadcast
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_forbidden_v4(v4);
    }
    let segments = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7, incl. AWS fd00:ec2::254
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (segments[0] & 0xff00) == 0xff00 // multicast
        || (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1) // local NAT64 64:ff9b:1::/48
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20 (RFC 9637)
        || (segments[0] == 0x2001 && segments[1] == 0x0002 && segments[2] == 0) // benchmarking 2001:2::/48
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only 100::/64
}

/// The IPv4 address an IPv6 address carries to an IPv4 host: mapped (`::ffff:a.b.c.d`),
/// translated (`::ffff:0:a.b.c.d`, RFC 2765 and 6145's stateless translation), compatible
/// (`::a.b.c.d`, deprecated but still routed by some stacks), NAT64 (`64:ff9b::/96`), 6to4
/// (`2002:AABB:CCDD::/48`) and Teredo (`2001:0::/32`, client address inverted in the last 32
/// bits). The local-use NAT64 prefix `64:ff9b:1::/48` is refused whole in
/// [`is_forbidden_v6`], since its translator is the operator's own and reaches whatever it
/// is set up to. ISATAP interface ids (`::5efe:a.b.c.d`) are not judged by their address:
/// they sit under a routed prefix, and a site's ISATAP hosts have private IPv4 addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(last(s[6], s[7]));
    }
    if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(last(s[6], s[7]));
    }
    // `::` and `::1` are themselves, not IPv4 0.0.0.0 and 0.0.0.1.
    if s[0..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
        return Some(last(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(last(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(last(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(last(!s[6], !s[7]));
    }
    None
}

/// Checks a webhook URL: http or https with a host, and, unless private targets are allowed,
/// no IP-literal host that [`is_forbidden`]. Hostnames are checked when connecting.
///
/// Its messages show the URL redacted ([`redact_url`]): they are stored with delivery attempts
/// and logged.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, AlertError> {
    let parsed = Url::parse(url).map_err(|e| {
        AlertError::BadInput(format!("url `{}` is not a valid URL: {e}", redact_url(url)))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AlertError::BadInput(format!(
            "url `{}` must use http or https",
            redact_url(url)
        )));
    }
    let literal = match parsed.host() {
        None => {
            return Err(AlertError::BadInput(format!(
                "url `{}` needs a host, e.g. https://alerts.example.com/hook",
                redact_url(url)
            )));
        }
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(address) = literal
        && !allow_private
        && is_forbidden(address)
    {
        return Err(AlertError::Forbidden(
            ForbiddenTarget {
                target: redact(parsed),
                address,
            }
            .to_string(),
        ));
    }
    Ok(parsed)
}

/// A DNS resolver for the webhook client that never returns a forbidden address: when every
/// address of a name is forbidden the lookup fails with [`ForbiddenTarget`].
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addrs(&host, resolved)?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolved addresses that may be connected to, or why none may.
fn allowed_addrs(
    host: &str,
    resolved: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, ForbiddenTarget> {
    let first_forbidden = resolved.iter().find(|a| is_forbidden(a.ip())).copied();
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| !is_forbidden(a.ip()))
        .collect();
    match (allowed.is_empty(), first_forbidden) {
        (true, Some(address)) => Err(ForbiddenTarget {
            target: host.to_string(),
            address: address.ip(),
        }),
        _ => Ok(allowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, refused: bool) {
        let result = check_url(url, false);
        assert_eq!(
            matches!(result, Err(AlertError::Forbidden(_))),
            refused,
            "{url}: {result:?}"
        );
        assert!(check_url(url, true).is_ok(), "{url} with the flag");
    }

    #[test]
    fn every_spelling_of_a_forbidden_address_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[::ffff:0:10.0.0.1]/",
            "http://[::ffff:0:169.254.169.254]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[64:ff9b:1::5db8:d822]/",
            "http://[3fff::1]/",
            "http://[2001:2::1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://100.64.0.1/",
            "http://198.18.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://[ff02::1]:8443/",
        ] {
            check(url, true);
        }
    }

    #[test]
    fn a_refusal_shows_the_url_without_its_credentials() {
        let Err(AlertError::Forbidden(message)) = check_url(
            "http://user:pw@[::ffff:0:127.0.0.1]:9/hook?token=s3cret",
            false,
        ) else {
            panic!("the IPv4-translated loopback is refused");
        };
        assert!(
            message.contains("http://<redacted>@[::ffff:0:7f00:1]:9/hook?<redacted>"),
            "{message}"
        );
        assert!(
            !message.contains("s3cret") && !message.contains("pw"),
            "{message}"
        );
    }

    #[test]
    fn public_addresses_and_hostnames_pass_the_literal_check() {
        for url in [
            "http://93.184.216.34/",
            "https://[2606:4700::1]/",
            "https://[::ffff:0:93.184.216.34]/",
            "https://[64:ff9b::5db8:d822]/",
            "https://172.32.0.1/",
            "https://100.128.0.1/",
            "https://alerts.example.com/hook",
            "http://localhost:9/",
        ] {
            check(url, false);
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_accepted() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com/hook",
            "gopher://example.com/",
        ] {
            assert!(
                matches!(check_url(url, true), Err(AlertError::BadInput(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn the_resolver_drops_forbidden_answers_and_fails_when_none_are_left() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        let mixed = vec![addr("127.0.0.1:0"), addr("93.184.216.34:0")];
        assert_eq!(
            allowed_addrs("rebind.example", mixed).unwrap(),
            vec![addr("93.184.216.34:0")]
        );
        let error =
            allowed_addrs("localhost", vec![addr("[::1]:0"), addr("127.0.0.1:0")]).unwrap_err();
        assert!(error.to_string().contains("--allow-private-webhooks"));
        assert!(allowed_addrs("nothing.example", vec![]).unwrap().is_empty());
    }

    #[tokio::test]
    async fn localhost_through_the_resolver_is_refused() {
        let name: Name = "localhost".parse().unwrap();
        let error = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        assert!(error.downcast_ref::<ForbiddenTarget>().is_some(), "{error}");
    }
}
