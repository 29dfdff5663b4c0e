//! Where a callback may point (DESIGN §2d): `https` only, and never to a loopback, private,
//! link-local, metadata or otherwise non-public address — except hosts the operator lists in
//! `USAGE_API_WEBHOOK_ALLOW_HOSTS` (then `http` too). Checked when a trigger is created or
//! changed, and again at every delivery on the addresses actually connected to: `SafeResolver`
//! hands the HTTP client only permitted addresses, so a name that resolves elsewhere later (DNS
//! rebinding) cannot smuggle one in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::{Host, Url};

/// Longest callback URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2_048;

/// How long a name may take to resolve when a trigger is created or changed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The operator's exceptions: host names or addresses (as written in URLs, lower case).
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    allow_hosts: Vec<String>,
}

/// A host as the allow-list compares it: an address in its canonical form (`::1`, never
/// `0:0:0:0:0:0:0:1` or `[::1]`), a name in lower case.
fn canonical(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

impl CallbackPolicy {
    pub fn new(allow_hosts: &[String]) -> Self {
        CallbackPolicy {
            allow_hosts: allow_hosts
                .iter()
                .map(|h| canonical(h))
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether the operator allowed `host` (a URL's host, an address or a name).
    pub fn allows(&self, host: &str) -> bool {
        let host = canonical(host);
        self.allow_hosts.contains(&host)
    }

    /// Checks a callback URL's form and, for an address literal, the address: the URL to store,
    /// or why it is refused. Names are checked by `check_resolved`.
    pub fn check(&self, text: &str) -> Result<Url, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!("longer than {MAX_URL_BYTES} bytes"));
        }
        let url = Url::parse(text).map_err(|e| format!("not an absolute URL ({e})"))?;
        let host = url
            .host_str()
            .ok_or_else(|| "has no host".to_owned())?
            .to_owned();
        let allowed = self.allows(&host);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            "http" => return Err("must use https".to_owned()),
            other => return Err(format!("scheme '{other}' is not https")),
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials (the signature authenticates us)".to_owned());
        }
        if !allowed {
            let literal = match url.host() {
                Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| forbidden(*ip)) {
                return Err(format!("{ip} is not a public address"));
            }
        }
        Ok(url)
    }

    /// Resolves a name's addresses now and refuses it if any is not public. A name that does
    /// not resolve yet is accepted: every delivery checks again.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), String> {
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        if self.allows(name) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((name, port));
        if let Ok(Ok(addresses)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            for address in addresses {
                if forbidden(address.ip()) {
                    return Err(format!(
                        "{name} resolves to {}, not a public address",
                        address.ip()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Why a delivery to `url` must not be attempted, for an address literal the operator did not
    /// allow (names are filtered by `SafeResolver`).
    pub fn refuse_literal(&self, url: &Url) -> Option<IpAddr> {
        let ip = match url.host()? {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(_) => return None,
        };
        (!self.allows(&ip.to_string()) && forbidden(ip)).then_some(ip)
    }
}

/// Whether `ip` is anything but a public unicast address: loopback, private, shared (CGNAT),
/// link-local (the cloud metadata endpoints among them), unspecified, multicast, broadcast,
/// documentation or reserved ranges, and IPv4 carried in IPv6 (mapped, compatible, NAT64, 6to4)
/// judged as that IPv4.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // ::a.b.c.d (IPv4-compatible), 64:ff9b::/96 (NAT64), 2002::/16 (6to4): judged as the IPv4.
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        return forbidden_v4(embedded(segments[6], segments[7]));
    }
    // 64:ff9b::/96 (well-known NAT64) and ::ffff:0:0/96 (IPv4-translated, SIIT).
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return forbidden_v4(embedded(segments[6], segments[7]));
    }
    // 64:ff9b:1::/48 (local-use NAT64, RFC 8215) and Teredo (2001::/32) carry IPv4 we cannot
    // judge reliably: refused whole.
    if segments[..3] == [0x64, 0xff9b, 1] || segments[..2] == [0x2001, 0] {
        return true;
    }
    if segments[0] == 0x2002 {
        return forbidden_v4(embedded(segments[1], segments[2]));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254, a metadata address, too)
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only
}

/// The delivery client's resolver: the system's answer, without the addresses `forbidden`
/// refuses (unless the name is allowed). A name left with none fails to connect with
/// `ForbiddenAddress`.
pub struct SafeResolver {
    pub policy: Arc<CallbackPolicy>,
}

/// Every address of a callback's name was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to addresses that are not public")]
pub struct ForbiddenAddress(pub String);

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.allows(&host);
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allowed || !forbidden(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(
                    Box::new(ForbiddenAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "192.88.99.1",
        ] {
            assert!(forbidden(text.parse().unwrap()), "{text} passed");
        }
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!forbidden(text.parse().unwrap()), "{text} refused");
        }
    }

    #[test]
    fn urls_are_https_to_public_hosts_unless_allowed() {
        let strict = CallbackPolicy::default();
        assert!(strict.check("https://example.com/hook").is_ok());
        assert!(strict.check("http://example.com/hook").is_err());
        assert!(strict.check("https://127.0.0.1/hook").is_err());
        assert!(strict.check("https://[::1]:8443/hook").is_err());
        assert!(strict.check("https://169.254.169.254/latest").is_err());
        assert!(strict.check("ftp://example.com/").is_err());
        assert!(strict.check("https://example.com/#frag").is_err());
        assert!(strict.check("/relative").is_err());
        assert!(strict.check("https://user:pw@example.com/").is_err());
        // Other spellings of loopback are the same address to the parser.
        for other in [
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
        ] {
            assert!(strict.check(other).is_err(), "{other}");
        }
        let canonical = CallbackPolicy::new(&["0:0:0:0:0:0:0:1".to_owned()]);
        assert!(canonical.check("http://[::1]:8080/").is_ok());
        assert!(canonical
            .refuse_literal(&Url::parse("http://[::1]/").unwrap())
            .is_none());
        let allowing = CallbackPolicy::new(&["127.0.0.1".to_owned()]);
        assert!(allowing.check("http://127.0.0.1:9/hook").is_ok());
        assert!(allowing.check("http://10.0.0.1/hook").is_err());
        assert!(allowing
            .refuse_literal(&Url::parse("http://127.0.0.1/").unwrap())
            .is_none());
        assert!(strict
            .refuse_literal(&Url::parse("http://127.0.0.1/").unwrap())
            .is_some());
    }
}
