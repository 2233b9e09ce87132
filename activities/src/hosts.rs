//! Where the HTTP activities may send a request, and so the bearer token: a second line of defence
//! against server-side request forgery (a workflow's `apiUrl` pointing at an internal service or the
//! cloud's metadata endpoint).
//!
//! - Only `http` and `https` URLs.
//! - With an allow-list (`HttpConfig::allowed_hosts`, the worker's `--api-allow-host`): only the hosts
//!   in it, each `host`, `host:port`, `*.example.com` (any subdomain, not `example.com` itself), or an
//!   IP address (`10.0.0.5`, `[fd00::1]:8443`). An entry without a port allows every port. Host names
//!   are compared as written (`localhost` does not allow `127.0.0.1`).
//! - Always, even without a list: link-local and cloud-metadata destinations ([`is_metadata_ip`],
//!   [`METADATA_HOSTNAMES`]) are refused unless listed exactly (not by a wildcard), both as the URL's
//!   literal host and as any address its name resolves to (checked by the client's resolver, at
//!   connection time, so a name that changes its answer between a check and the connection is still
//!   caught). Loopback and private addresses are not refused by default: list hosts to restrict them.
//! - Redirects are followed only within the same host and port (or from http to https on the default
//!   ports), at most [`MAX_REDIRECTS`], each checked again; any other redirect fails the request, so
//!   the token (and the request) never goes to another host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;

/// Host names of cloud metadata services, refused unless listed exactly.
pub const METADATA_HOSTNAMES: [&str; 3] = ["metadata.google.internal", "metadata", "instance-data"];

/// Redirects followed at most (each within the same host).
pub const MAX_REDIRECTS: usize = 5;

/// The option that lists allowed hosts, as the worker spells it (named in refusals).
pub const ALLOW_OPTION: &str = "--api-allow-host";

/// True for link-local and cloud-metadata addresses: IPv4 169.254.0.0/16 (AWS, GCP, Azure, ...
/// metadata at 169.254.169.254), 100.100.100.200 (Alibaba Cloud), IPv6 fe80::/10, fd00:ec2::254
/// (AWS over IPv6); also those IPv4 addresses mapped into IPv6 (`::ffff:169.254.169.254`) or behind
/// the NAT64 prefix (`64:ff9b::a9fe:a9fe`).
pub fn is_metadata_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_metadata_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && {
                    let [a, b] = s[6].to_be_bytes();
                    let [c, d] = s[7].to_be_bytes();
                    is_metadata_v4(Ipv4Addr::new(a, b, c, d))
                })
        }
    }
}

fn is_metadata_v4(v4: Ipv4Addr) -> bool {
    v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

/// True for the metadata services' host names (case and a trailing dot aside).
pub fn is_metadata_hostname(host: &str) -> bool {
    let h = normalize_name(host);
    METADATA_HOSTNAMES.contains(&h.as_str())
}

fn normalize_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A URL's host: an address or a (lowercase, no trailing dot) name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Ip(IpAddr),
    Name(String),
}

impl Dest {
    fn of(host: &str) -> Dest {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Dest::Ip(ip.to_canonical()),
            Err(_) => Dest::Name(normalize_name(bare)),
        }
    }

    fn is_metadata(&self) -> bool {
        match self {
            Dest::Ip(ip) => is_metadata_ip(*ip),
            Dest::Name(n) => is_metadata_hostname(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// This name or address exactly.
    Exact(Dest),
    /// Any name ending with this suffix (with its leading dot).
    Subdomains(String),
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pattern: Pattern,
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `host`, `host:port`, `*.example.com[:port]`, an IPv4 address, or an IPv6 address
    /// (bracketed when with a port).
    pub fn parse(entry: &str) -> Result<AllowedHost, String> {
        let s = entry.trim().to_ascii_lowercase();
        let bad = |why: &str| Err(format!("`{entry}` is not a host for {ALLOW_OPTION}: {why}"));
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .map_err(|_| format!("`{entry}` is not a host for {ALLOW_OPTION}: bad port `{p}`"))
        };
        if s.contains('/') {
            return bad("a host, not a URL (no scheme, no path)");
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return bad("no closing `]`");
            };
            if h.parse::<Ipv6Addr>().is_err() {
                return bad("not an IPv6 address in brackets");
            }
            match after {
                "" => (h.to_string(), None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h.to_string(), Some(port(p)?)),
                    None => return bad("expected `:port` after `]`"),
                },
            }
        } else if s.matches(':').count() > 1 {
            if s.parse::<Ipv6Addr>().is_err() {
                return bad("not an IPv6 address (put one with a port in brackets)");
            }
            (s.clone(), None)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h.to_string(), Some(port(p)?))
        } else {
            (s.clone(), None)
        };
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        let pattern = if let Ok(ip) = host.parse::<IpAddr>() {
            Pattern::Exact(Dest::Ip(ip.to_canonical()))
        } else if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = suffix.trim_end_matches('.');
            if !valid_name(suffix) {
                return bad("a wildcard is `*.` followed by a domain");
            }
            Pattern::Subdomains(format!(".{suffix}"))
        } else {
            let name = host.trim_end_matches('.');
            if !valid_name(name) {
                return bad(
                    "expected a host name (letters, digits, `-`, `.`; punycode `xn--` for others), an IP address or `*.domain`",
                );
            }
            Pattern::Exact(Dest::Name(name.to_string()))
        };
        Ok(AllowedHost { pattern, port })
    }

    /// `Some(true)`: matches exactly; `Some(false)`: by a wildcard; `None`: does not match. A `port`
    /// of `None` (unknown: at name resolution) matches any entry's port.
    fn matches(&self, dest: &Dest, port: Option<u16>) -> Option<bool> {
        if let (Some(want), Some(got)) = (self.port, port)
            && want != got
        {
            return None;
        }
        match (&self.pattern, dest) {
            (Pattern::Exact(d), _) if d == dest => Some(true),
            (Pattern::Subdomains(suffix), Dest::Name(n)) if n.ends_with(suffix.as_str()) => {
                Some(false)
            }
            _ => None,
        }
    }
}

/// Why a destination is refused (the request is not made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The host refused.
    pub host: String,
    /// Why, naming the host and the option that would allow it.
    pub reason: String,
}

/// The worker's API host policy.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    allowed: Vec<AllowedHost>,
    /// True when a list was given (even one whose entries were all invalid: then nothing is allowed).
    listed: bool,
}

impl HostPolicy {
    /// The policy of these allow-list entries (empty: every host but the metadata ones). Entries that
    /// do not parse are returned with the reason; they allow nothing (a list never widens because of
    /// a typo).
    pub fn new<S: AsRef<str>>(entries: &[S]) -> (HostPolicy, Vec<String>) {
        let mut errors = Vec::new();
        let allowed = entries
            .iter()
            .filter_map(|e| {
                AllowedHost::parse(e.as_ref())
                    .map_err(|err| errors.push(err))
                    .ok()
            })
            .collect();
        (
            HostPolicy {
                allowed,
                listed: !entries.is_empty(),
            },
            errors,
        )
    }

    /// True when an allow-list is configured.
    pub fn is_restricted(&self) -> bool {
        self.listed
    }

    /// `Some(exact)` when an entry allows `dest` on `port`.
    fn listing(&self, dest: &Dest, port: Option<u16>) -> Option<bool> {
        self.allowed
            .iter()
            .filter_map(|a| a.matches(dest, port))
            .max()
    }

    /// Checks a URL before anything is sent: its scheme, the allow-list, a literal metadata host.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        let host = url.host_str().unwrap_or("");
        let refuse = |reason: String| {
            Err(Refusal {
                host: host.to_string(),
                reason,
            })
        };
        if !matches!(url.scheme(), "http" | "https") {
            return refuse(format!(
                "only http and https URLs are allowed, not `{}:`",
                url.scheme()
            ));
        }
        if host.is_empty() {
            return refuse("the URL has no host".into());
        }
        let dest = Dest::of(host);
        let port = url.port_or_known_default();
        let listing = self.listing(&dest, port);
        if self.listed && listing.is_none() {
            let at = port.map(|p| format!("{host}:{p}")).unwrap_or(host.into());
            return refuse(format!(
                "host `{at}` is not in the worker's API host allow-list; add `{host}` (or `{at}`) to {ALLOW_OPTION} to allow it"
            ));
        }
        if listing != Some(true) && dest.is_metadata() {
            return refuse(format!(
                "host `{host}` is a link-local or cloud-metadata destination, refused unless listed exactly in {ALLOW_OPTION}"
            ));
        }
        Ok(())
    }

    /// Checks the addresses a host name resolved to: one link-local or metadata address refuses the
    /// name, unless it is listed exactly.
    pub fn check_resolved(&self, name: &str, ips: &[IpAddr]) -> Result<(), Refusal> {
        let dest = Dest::of(name);
        if self.listing(&dest, None) == Some(true) {
            return Ok(());
        }
        match ips.iter().find(|ip| is_metadata_ip(**ip)) {
            Some(ip) => Err(Refusal {
                host: name.to_string(),
                reason: format!(
                    "host `{name}` resolves to {ip}, a link-local or cloud-metadata address, refused unless `{name}` is listed exactly in {ALLOW_OPTION}"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Checks a redirect from the chain that began at `first` to `next`.
    pub fn check_redirect(
        &self,
        first: &reqwest::Url,
        next: &reqwest::Url,
        hops: usize,
    ) -> Result<(), Refusal> {
        let host = next.host_str().unwrap_or("").to_string();
        if hops > MAX_REDIRECTS {
            return Err(Refusal {
                host,
                reason: format!("more than {MAX_REDIRECTS} redirects"),
            });
        }
        let same_host = first.host_str() == next.host_str();
        let same_port = first.scheme() == next.scheme()
            && first.port_or_known_default() == next.port_or_known_default();
        let upgrade = first.scheme() == "http"
            && next.scheme() == "https"
            && first.port().is_none()
            && next.port().is_none();
        if !(same_host && (same_port || upgrade)) {
            let from = first.host_str().unwrap_or("");
            return Err(Refusal {
                reason: format!(
                    "the API redirected from `{from}` to `{host}` ({}): redirects are followed only within the same host and port, so that the token goes nowhere else; point the URL at the final host",
                    next.origin().ascii_serialization()
                ),
                host,
            });
        }
        self.check_url(next)
    }

    /// The client's redirect policy: [`HostPolicy::check_redirect`] for every hop.
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            let checked = match attempt.previous().first() {
                Some(first) => {
                    policy.check_redirect(first, attempt.url(), attempt.previous().len())
                }
                None => policy.check_url(attempt.url()),
            };
            match checked {
                Ok(()) => attempt.follow(),
                Err(r) => attempt.error(r),
            }
        })
    }
}

/// Resolves a host name to its addresses (the system's resolver by default; tests inject their own).
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The system's resolver (`getaddrinfo`, through tokio).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

/// The HTTP client's resolver: `lookup`, then [`HostPolicy::check_resolved`] on what it answered,
/// at connection time (so for every request and redirect, and with no window for the name to
/// change its answer between the check and the connection).
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<HostPolicy>,
    pub(crate) lookup: Lookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let ips = (lookup)(name.clone()).await?;
            policy.check_resolved(&name, &ips)?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The [`Refusal`] somewhere in an error's chain of sources (a redirect or a resolution refused).
pub(crate) fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    fn policy(entries: &[&str]) -> HostPolicy {
        let (p, errors) = HostPolicy::new(entries);
        assert!(errors.is_empty(), "{errors:?}");
        p
    }

    #[test]
    fn link_local_and_metadata_addresses_are_classified() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_metadata_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "100.100.100.201",
            "169.253.255.255",
            "::1",
            "fec0::1",
            "fd00:ec2::253",
            "8.8.8.8",
        ] {
            assert!(!is_metadata_ip(ip.parse().unwrap()), "{ip}");
        }
        for h in [
            "metadata",
            "METADATA.google.internal",
            "metadata.google.internal.",
            "instance-data",
        ] {
            assert!(is_metadata_hostname(h), "{h}");
        }
        assert!(!is_metadata_hostname("metadata.example.com"));
    }

    #[test]
    fn without_a_list_everything_but_metadata_is_allowed() {
        let p = HostPolicy::default();
        for ok in [
            "http://127.0.0.1:8080/x",
            "https://api.example.com/users/1",
            "http://[::1]/",
            "http://10.1.2.3/",
        ] {
            assert_eq!(p.check_url(&url(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://metadata/",
            "http://instance-data./",
        ] {
            let e = p.check_url(&url(bad)).unwrap_err();
            assert!(
                e.reason.contains("link-local or cloud-metadata")
                    && e.reason.contains(ALLOW_OPTION),
                "{bad}: {e}"
            );
        }
        for scheme in ["ftp://h/x", "file:///etc/passwd", "gopher://h/"] {
            let e = p.check_url(&url(scheme)).unwrap_err();
            assert!(e.reason.contains("only http and https"), "{e}");
        }
    }

    #[test]
    fn a_list_allows_only_its_hosts_and_ports() {
        let p = policy(&[
            "api.example.com",
            "127.0.0.1:8080",
            "*.svc.example.org",
            "[::1]:9000",
            "169.254.169.254",
        ]);
        for ok in [
            "https://api.example.com/x",
            "http://API.example.com:8443/x",
            "http://127.0.0.1:8080/x",
            "https://a.svc.example.org/x",
            "https://a.b.svc.example.org./x",
            "http://[::1]:9000/",
            "http://169.254.169.254/",
        ] {
            assert_eq!(p.check_url(&url(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:8081/x",
            "http://localhost:8080/x",
            "https://svc.example.org/x",
            "https://evil.com/?api.example.com",
            "https://api.example.com.evil.com/",
            "http://[::1]:9001/",
            "http://169.254.169.253/",
        ] {
            let e = p.check_url(&url(bad)).unwrap_err();
            assert!(
                e.reason.contains("not in the worker's API host allow-list")
                    && e.reason.contains(&e.host)
                    && e.reason.contains(ALLOW_OPTION),
                "{bad}: {e}"
            );
        }
        // A wildcard does not unlock a metadata name; listing it exactly does.
        let p = policy(&["*.internal", "*.google.internal"]);
        assert!(
            p.check_url(&url("http://metadata.google.internal/"))
                .is_err()
        );
        let p = policy(&["metadata.google.internal"]);
        assert_eq!(
            p.check_url(&url("http://metadata.google.internal/")),
            Ok(())
        );
    }

    #[test]
    fn entries_are_parsed_strictly_and_a_bad_one_allows_nothing() {
        for bad in [
            "",
            "host:port",
            "host:70000",
            "*",
            "*.",
            "a*.example.com",
            "http://example.com",
            "example.com/path",
            "[::1",
            "[::1]9000",
            "user@host",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
        let (p, errors) = HostPolicy::new(&["http://example.com"]);
        assert_eq!(errors.len(), 1);
        assert!(p.is_restricted());
        assert!(p.check_url(&url("http://example.com/")).is_err());
    }

    #[test]
    fn resolved_addresses_are_checked_unless_the_name_is_listed_exactly() {
        let ll: IpAddr = "169.254.10.10".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let p = HostPolicy::default();
        assert_eq!(p.check_resolved("api.test", &[lo]), Ok(()));
        let e = p.check_resolved("api.test", &[lo, ll]).unwrap_err();
        assert!(e.reason.contains("resolves to 169.254.10.10"), "{e}");
        let p = policy(&["api.test:8080"]);
        assert_eq!(p.check_resolved("api.test", &[ll]), Ok(()));
        let p = policy(&["*.test"]);
        assert!(p.check_resolved("api.test", &[ll]).is_err());
    }

    #[test]
    fn redirects_stay_on_the_same_host() {
        let p = HostPolicy::default();
        let first = url("http://api.example.com/a");
        assert_eq!(
            p.check_redirect(&first, &url("http://api.example.com/b"), 1),
            Ok(())
        );
        assert_eq!(
            p.check_redirect(&first, &url("https://api.example.com/b"), 1),
            Ok(())
        );
        for bad in [
            "http://other.example.com/b",
            "http://api.example.com:8080/b",
            "http://169.254.169.254/",
        ] {
            let e = p.check_redirect(&first, &url(bad), 1).unwrap_err();
            assert!(
                e.reason.contains("redirected from `api.example.com`"),
                "{e}"
            );
        }
        let https = url("https://api.example.com/a");
        assert!(
            p.check_redirect(&https, &url("http://api.example.com/b"), 1)
                .is_err(),
            "no downgrade"
        );
        assert!(
            p.check_redirect(&first, &url("http://api.example.com/b"), 6)
                .is_err()
        );
    }
}
