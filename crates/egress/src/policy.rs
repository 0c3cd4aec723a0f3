//! Which network addresses an outbound call may reach.
//!
//! Everything that is not a plain public unicast address is refused by default: a URL a
//! tenant supplies must never reach the hub's own machine, its private network or a cloud
//! provider's metadata service. The operator can lift the guard entirely (a development
//! machine, a test) or allow chosen networks (a self-hosted service on a private range).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused. The `code` is what attempts and problem details record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    /// 127.0.0.0/8 or `::1`; also `localhost` and its subdomains, whatever DNS says.
    Loopback,
    /// RFC 1918.
    Private,
    /// RFC 6598 carrier-grade NAT (100.64.0.0/10).
    SharedAddressSpace,
    /// 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// IPv6 unique local addresses (fc00::/7).
    UniqueLocal,
    /// 224.0.0.0/4 or ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// TEST-NET-1/2/3, 2001:db8::/32.
    Documentation,
    /// Benchmarking, IETF protocol assignments, the old class E space.
    Reserved,
    /// An IPv6 address that carries a refused IPv4 address (`::ffff:127.0.0.1`, NAT64, 6to4,
    /// Teredo…).
    Ipv4Embedded,
    /// Instance metadata services of the cloud providers.
    CloudMetadata,
}

impl Refusal {
    /// The stable code recorded on attempts and in problem details (`loopback_address`, …).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unspecified => "unspecified_address",
            Refusal::Loopback => "loopback_address",
            Refusal::Private => "private_address",
            Refusal::SharedAddressSpace => "shared_address_space",
            Refusal::LinkLocal => "link_local_address",
            Refusal::UniqueLocal => "unique_local_address",
            Refusal::Multicast => "multicast_address",
            Refusal::Broadcast => "broadcast_address",
            Refusal::Documentation => "documentation_address",
            Refusal::Reserved => "reserved_address",
            Refusal::Ipv4Embedded => "ipv4_embedded_in_ipv6",
            Refusal::CloudMetadata => "cloud_metadata_address",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Refusal::Unspecified => "an unspecified address",
            Refusal::Loopback => "a loopback address",
            Refusal::Private => "a private (RFC 1918) address",
            Refusal::SharedAddressSpace => "a carrier-grade NAT (RFC 6598) address",
            Refusal::LinkLocal => "a link-local address",
            Refusal::UniqueLocal => "an IPv6 unique local address",
            Refusal::Multicast => "a multicast address",
            Refusal::Broadcast => "the broadcast address",
            Refusal::Documentation => "a documentation address",
            Refusal::Reserved => "a reserved address",
            Refusal::Ipv4Embedded => "an IPv6 address carrying a refused IPv4 address",
            Refusal::CloudMetadata => "a cloud metadata service address",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The operator's choice of what outbound calls may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Lifts the guard: every address is allowed.
    pub allow_private: bool,
    /// Networks allowed even though they fall in a refused range.
    pub allowed_networks: Vec<IpNet>,
}

impl AddressPolicy {
    /// The policy for tests and development machines: anything goes.
    pub fn allow_all() -> Self {
        Self { allow_private: true, allowed_networks: Vec::new() }
    }

    /// Whether calls may reach `ip`: refused ranges fail with their reason unless the address is in
    /// an allowed network (or the guard is lifted).
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allow_private {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.allowed_networks.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(refusal) => Err(refusal),
        }
    }
}

/// Host names that always mean the local machine or a metadata service, whatever DNS says.
pub fn refused_host_name(host: &str) -> Option<Refusal> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(Refusal::Loopback);
    }
    if matches!(host.as_str(), "metadata" | "metadata.google.internal" | "instance-data" | "instance-data.ec2.internal")
    {
        return Some(Refusal::CloudMetadata);
    }
    None
}

/// The range `ip` belongs to, when that range is refused.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, c, _] = ip.octets();
    // Metadata first: these sit inside the link-local and CGNAT ranges.
    if matches!(ip.octets(), [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200]) {
        return Some(Refusal::CloudMetadata);
    }
    let refusal = match (a, b, c) {
        (0, _, _) => Refusal::Unspecified,
        (127, _, _) => Refusal::Loopback,
        (10, _, _) => Refusal::Private,
        (172, 16..=31, _) => Refusal::Private,
        (192, 168, _) => Refusal::Private,
        (100, 64..=127, _) => Refusal::SharedAddressSpace,
        (169, 254, _) => Refusal::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Refusal::Documentation,
        (192, 0, 0) | (198, 18..=19, _) => Refusal::Reserved,
        (224..=239, _, _) => Refusal::Multicast,
        (255, 255, 255) if ip.is_broadcast() => Refusal::Broadcast,
        (240..=255, _, _) => Refusal::Reserved,
        _ => return None,
    };
    Some(refusal)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    // fd00:ec2::254 is the AWS metadata service over IPv6.
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Refusal::CloudMetadata);
    }
    // IPv6's own special ranges first: an ISATAP identifier under fe80::/10 or fd00::/8 is
    // still a link-local or unique-local address, whatever IPv4 address it names.
    let refusal = match segments {
        [first, ..] if first & 0xfe00 == 0xfc00 => Some(Refusal::UniqueLocal),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some(Refusal::LinkLocal),
        // The deprecated site-local range behaves like a private one.
        [first, ..] if first & 0xffc0 == 0xfec0 => Some(Refusal::Private),
        [first, ..] if first & 0xff00 == 0xff00 => Some(Refusal::Multicast),
        [0x2001, 0x0db8, ..] => Some(Refusal::Documentation),
        _ => None,
    };
    if refusal.is_some() {
        return refusal;
    }
    // An address that carries an IPv4 address reaches that address: it is judged by it (a
    // DNS64 resolver answers 64:ff9b::8.8.8.8 for a public IPv4-only host, which must pass).
    embedded_v4(ip).into_iter().any(|v4| classify_v4(v4).is_some()).then_some(Refusal::Ipv4Embedded)
}

/// The IPv4 addresses an IPv6 address may reach, for every range that embeds one. Where the
/// position depends on the operator's prefix length (local-use NAT64), every position RFC 6052
/// allows is returned, and any refused one refuses the address.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Ipv4Addr::new(a, b, c, d);
    let last = v4(o[12], o[13], o[14], o[15]);
    let s = ip.segments();
    match s {
        // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (SIIT, RFC 6145), ::a.b.c.d (compatible).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0, 0, 0, 0, 0, 0, _, _] => vec![last],
        // 64:ff9b::/96, the well-known NAT64 prefix (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![last],
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): the IPv4 address sits where the
        // operator's prefix length puts it (/48, /56, /64 or /96; bits 64–71 are skipped).
        [0x64, 0xff9b, 0x0001, ..] => {
            vec![v4(o[6], o[7], o[9], o[10]), v4(o[7], o[9], o[10], o[11]), v4(o[9], o[10], o[11], o[12]), last]
        }
        // 6to4 (2002::/16): the IPv4 address follows the prefix.
        [0x2002, ..] => vec![v4(o[2], o[3], o[4], o[5])],
        // Teredo (2001::/32): the server's address, and the client's (bit-inverted) at the end.
        [0x2001, 0, ..] => vec![v4(o[4], o[5], o[6], o[7]), v4(!o[12], !o[13], !o[14], !o[15])],
        // ISATAP interface identifiers (…:0:5efe:a.b.c.d, …:200:5efe:a.b.c.d).
        [.., 0 | 0x0200, 0x5efe, _, _] => vec![last],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(ip: &str) -> Option<Refusal> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn public_unicast_addresses_pass() {
        for ip in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert_eq!(refusal(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_a_public_ipv4_address_pass_as_it_does() {
        // What a DNS64 resolver answers for an IPv4-only host, and the other carriers.
        for ip in ["64:ff9b::808:808", "::ffff:8.8.8.8", "::ffff:0:808:808", "2002:808:808::1"] {
            assert_eq!(refusal(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_special_range_is_refused_with_its_reason() {
        let cases = [
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("127.0.0.1", Refusal::Loopback),
            ("127.255.255.254", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("10.1.2.3", Refusal::Private),
            ("172.16.0.1", Refusal::Private),
            ("172.31.255.255", Refusal::Private),
            ("192.168.1.1", Refusal::Private),
            ("100.64.0.1", Refusal::SharedAddressSpace),
            ("100.127.255.255", Refusal::SharedAddressSpace),
            ("169.254.1.1", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("fc00::1", Refusal::UniqueLocal),
            ("fd12:3456::1", Refusal::UniqueLocal),
            ("224.0.0.1", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Broadcast),
            ("192.0.2.10", Refusal::Documentation),
            ("198.51.100.10", Refusal::Documentation),
            ("203.0.113.10", Refusal::Documentation),
            ("2001:db8::1", Refusal::Documentation),
            ("198.18.0.1", Refusal::Reserved),
            ("240.0.0.1", Refusal::Reserved),
            ("::ffff:127.0.0.1", Refusal::Ipv4Embedded),
            ("::127.0.0.1", Refusal::Ipv4Embedded),
            ("64:ff9b::a00:1", Refusal::Ipv4Embedded),
            ("2002:7f00:1::", Refusal::Ipv4Embedded),
            // Local-use NAT64 at every prefix length, and SIIT's IPv4-translated form.
            ("64:ff9b:1:7f00:0:100::", Refusal::Ipv4Embedded),
            ("64:ff9b:1::a9:fea9:fe00:0", Refusal::Ipv4Embedded),
            ("64:ff9b:1::7f00:1", Refusal::Ipv4Embedded),
            ("::ffff:0:7f00:1", Refusal::Ipv4Embedded),
            ("::ffff:0:a9fe:a9fe", Refusal::Ipv4Embedded),
            ("2001:0:7f00:1::", Refusal::Ipv4Embedded),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Refusal::Ipv4Embedded),
            ("2606:4700::5efe:a00:1", Refusal::Ipv4Embedded),
            ("169.254.169.254", Refusal::CloudMetadata),
            ("169.254.170.2", Refusal::CloudMetadata),
            ("100.100.100.200", Refusal::CloudMetadata),
            ("fd00:ec2::254", Refusal::CloudMetadata),
            // ISATAP identifiers naming a public IPv4 address inside IPv6's own local ranges.
            ("fe80::5efe:808:808", Refusal::LinkLocal),
            ("fe80::200:5efe:808:808", Refusal::LinkLocal),
            ("fd00::5efe:808:808", Refusal::UniqueLocal),
            ("fec0::5efe:808:808", Refusal::Private),
            ("ff02::5efe:808:808", Refusal::Multicast),
            ("2001:db8::5efe:808:808", Refusal::Documentation),
        ];
        for (ip, expected) in cases {
            assert_eq!(refusal(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn the_operator_can_allow_networks_or_lift_the_guard() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(AddressPolicy::default().check(ip), Err(Refusal::Private));
        let allow_list = AddressPolicy { allow_private: false, allowed_networks: vec!["10.0.0.0/24".parse().unwrap()] };
        assert_eq!(allow_list.check(ip), Ok(()));
        assert_eq!(allow_list.check("10.0.1.5".parse().unwrap()), Err(Refusal::Private));
        assert_eq!(AddressPolicy::allow_all().check("169.254.169.254".parse().unwrap()), Ok(()));
    }

    #[test]
    fn local_and_metadata_host_names_are_refused_by_name() {
        assert_eq!(refused_host_name("localhost"), Some(Refusal::Loopback));
        assert_eq!(refused_host_name("LOCALHOST."), Some(Refusal::Loopback));
        assert_eq!(refused_host_name("api.localhost"), Some(Refusal::Loopback));
        assert_eq!(refused_host_name("metadata.google.internal"), Some(Refusal::CloudMetadata));
        assert_eq!(refused_host_name("example.com"), None);
    }
}
