//! The PROXY protocol (v1 text, v2 binary): the client's address sent ahead of the bytes of a
//! connection, so a balancer behind a balancer still knows who the client is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that opens a v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header accepted: a v1 line is at most 107 bytes; v2 TLVs are capped here.
pub const MAX_HEADER: usize = 4096;

/// Which PROXY protocol version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Whether the connection carries TCP or UDP, for the v2 family byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// What a received header says: the original client and the address it connected to;
/// `None` for `LOCAL` (v2) and `UNKNOWN` (v1) headers, such as a balancer's own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Writes the header announcing a connection from `source` to `destination`.
pub fn encode(version: Version, transport: Transport, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    // Mixed families cannot be told in one header: say both in IPv6.
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) | (SocketAddr::V6(_), SocketAddr::V4(_)) => {
            (as_v6(source), as_v6(destination))
        }
        pair => pair,
    };
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {} {} {} {}\r\n", source.ip(), destination.ip(), source.port(), destination.port())
                .into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            let proto = match transport {
                Transport::Tcp => 0x1,
                Transport::Udp => 0x2,
            };
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x10 | proto);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x20 | proto);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6(addr.ip())), addr.port())
}

/// Parses a header at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// header and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..prefix] == V2_SIGNATURE[..prefix] {
        return parse_v2(buf);
    }
    let prefix = buf.len().min(6);
    if buf[..prefix] == b"PROXY "[..prefix] {
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= 107 { Err(ProxyError::Malformed("v1 line longer than 107 bytes")) } else { Ok(None) };
    };
    if end + 2 > 107 {
        return Err(ProxyError::Malformed("v1 line longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("v1 line is not text"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader { source: None, destination: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| ProxyError::Malformed("v1 address"))?;
                let right_family = if *family == "TCP4" { ip.is_ipv4() } else { ip.is_ipv6() };
                right_family.then_some(ip).ok_or(ProxyError::Malformed("v1 address of the wrong family"))
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                if s.len() > 1 && s.starts_with('0') {
                    return Err(ProxyError::Malformed("v1 port with a leading zero"));
                }
                s.parse().map_err(|_| ProxyError::Malformed("v1 port"))
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(ProxyError::Malformed("v1 line")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > MAX_HEADER {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let header = match ver_cmd & 0xF {
        0x0 => ProxyHeader { source: None, destination: None },
        0x1 => match family >> 4 {
            0x1 if body.len() >= 12 => {
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]));
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            0x2 if body.len() >= 36 => {
                let ip = |o: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            0x0 => ProxyHeader { source: None, destination: None },
            _ => return Err(ProxyError::Malformed("v2 address block")),
        },
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Some((header, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_for_both_families() {
        for version in [Version::V1, Version::V2] {
            for (src, dst) in [("127.0.0.2:50000", "127.0.0.1:80"), ("[2001:db8::1]:4000", "[::1]:443")] {
                let bytes = encode(version, Transport::Tcp, addr(src), addr(dst));
                let (header, used) = parse(&bytes).unwrap().unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(header.source, Some(addr(src)));
                assert_eq!(header.destination, Some(addr(dst)));
            }
        }
        assert_eq!(
            encode(Version::V1, Transport::Tcp, addr("1.2.3.4:5"), addr("6.7.8.9:10")),
            b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n"
        );
    }

    #[test]
    fn a_partial_header_asks_for_more_and_data_after_it_is_left() {
        let mut bytes = encode(Version::V2, Transport::Tcp, addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let header_len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for cut in 0..header_len {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(&bytes).unwrap().unwrap().1, header_len);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
    }

    #[test]
    fn local_and_unknown_carry_no_address() {
        let local = [&V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat();
        assert_eq!(parse(&local).unwrap().unwrap().0.source, None);
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0.source, None);
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 ::1 1 1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n").is_err());
        assert!(parse(&[b'P'; 200].iter().copied().chain(*b"\r\n").collect::<Vec<_>>()).is_err());
        assert!(parse(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()).is_err());
        let mut bad_version = encode(Version::V2, Transport::Tcp, addr("1.1.1.1:1"), addr("2.2.2.2:2"));
        bad_version[12] = 0x31;
        assert!(parse(&bad_version).is_err());
        let mut huge = encode(Version::V2, Transport::Tcp, addr("1.1.1.1:1"), addr("2.2.2.2:2"));
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse(&huge).is_err());
    }
}
