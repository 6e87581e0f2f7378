//! Replica addresses: the one canonical spelling every address takes before
//! it names a member, an origin or a view entry.
//!
//! A replica is identified by its address, so two spellings of one socket
//! (`[::ffff:127.0.0.1]:8090` and `127.0.0.1:8090`) would be two members, and
//! an address no replica can ever listen on (`0.0.0.0:0`, a multicast group)
//! would be a member probed forever. [`canonical`] accepts only `IP:PORT`
//! with a unicast, specified IP and a non-zero port, maps IPv4-mapped IPv6 to
//! IPv4, and prints the result in one form. Configuration and operator
//! requests are canonicalised; an address inside a message from a peer must
//! already be canonical ([`is_canonical`]), since every real replica only
//! ever sends canonical ones.

use std::net::{IpAddr, SocketAddr};

/// Why a text is not a usable replica address.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AddressError {
    /// Not `IP:PORT` (host names are not resolved).
    #[error("not IP:PORT")]
    NotIpPort,
    /// `0.0.0.0` or `::`: a bind wildcard, not where a replica can be reached.
    #[error("the IP is unspecified (0.0.0.0 or ::)")]
    Unspecified,
    /// A multicast or broadcast IP: not one replica.
    #[error("the IP is multicast or broadcast")]
    NotUnicast,
    /// Port 0: nothing can be reached there.
    #[error("the port is 0")]
    PortZero,
}

/// The canonical form of a replica address, or why it is unusable.
pub fn canonical(text: &str) -> Result<String, AddressError> {
    let parsed: SocketAddr = text.trim().parse().map_err(|_| AddressError::NotIpPort)?;
    let ip = match parsed.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if ip.is_unspecified() {
        return Err(AddressError::Unspecified);
    }
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_multicast() || broadcast {
        return Err(AddressError::NotUnicast);
    }
    if parsed.port() == 0 {
        return Err(AddressError::PortZero);
    }
    // Rebuilt from IP and port only: IPv6 flow information and scope
    // identifiers would give one socket several spellings.
    Ok(SocketAddr::new(ip, parsed.port()).to_string())
}

/// Whether `text` is a usable address already in its canonical spelling.
pub fn is_canonical(text: &str) -> bool {
    canonical(text).is_ok_and(|c| c == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_socket() {
        assert_eq!(canonical("10.0.0.1:8090").unwrap(), "10.0.0.1:8090");
        assert_eq!(canonical("[::ffff:127.0.0.1]:80").unwrap(), "127.0.0.1:80");
        assert_eq!(canonical("[::1]:80").unwrap(), "[::1]:80");
        assert_eq!(canonical("[0:0::1]:80").unwrap(), "[::1]:80");
        assert!(is_canonical("127.0.0.1:1"));
        assert!(!is_canonical("[::ffff:127.0.0.1]:1"));
        assert!(!is_canonical(" 127.0.0.1:1"));
    }

    #[test]
    fn unusable_addresses_are_refused() {
        use AddressError::*;
        for (text, why) in [
            ("0.0.0.0:0", Unspecified),
            ("0.0.0.0:8090", Unspecified),
            ("[::]:8090", Unspecified),
            ("[::ffff:0.0.0.0]:8090", Unspecified),
            ("224.0.0.1:80", NotUnicast),
            ("[ff02::1]:80", NotUnicast),
            ("255.255.255.255:80", NotUnicast),
            ("127.0.0.1:0", PortZero),
            ("replica-1:8090", NotIpPort),
            ("127.0.0.1", NotIpPort),
            ("", NotIpPort),
        ] {
            assert_eq!(canonical(text), Err(why), "{text}");
        }
    }
}
