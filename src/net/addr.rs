//! Addresses: resolution off the worker thread, and trying each address a name resolves
//! to. The socket system calls, and the C form of the address they take, are in
//! `sys::socket`.

use std::any::Any;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};

/// Resolves `addr` to socket addresses: at once for a literal address, else with
/// `getaddrinfo` on the [`unblock`](crate::unblock) pool, so that a fiber does not block
/// its worker on DNS.
pub(crate) fn resolve<A>(addr: A) -> io::Result<Vec<SocketAddr>>
where
    A: ToSocketAddrs + Send + 'static,
{
    if let Some(addrs) = literal(&addr) {
        return Ok(addrs);
    }
    crate::unblock(move || addr.to_socket_addrs().map(Iterator::collect))
}

/// The addresses of `addr` if it is one of the types that never need a lookup, or a string
/// holding a literal address.
fn literal(addr: &dyn Any) -> Option<Vec<SocketAddr>> {
    /// An IP given as text, and a port.
    fn parse_pair(host: &str, port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::new(host.parse().ok()?, port))
    }
    let single = if let Some(&addr) = addr.downcast_ref::<SocketAddr>() {
        Some(addr)
    } else if let Some(&addr) = addr.downcast_ref::<SocketAddrV4>() {
        Some(addr.into())
    } else if let Some(&addr) = addr.downcast_ref::<SocketAddrV6>() {
        Some(addr.into())
    } else if let Some(&(ip, port)) = addr.downcast_ref::<(IpAddr, u16)>() {
        Some(SocketAddr::new(ip, port))
    } else if let Some(&(ip, port)) = addr.downcast_ref::<(Ipv4Addr, u16)>() {
        Some(SocketAddr::new(ip.into(), port))
    } else if let Some(&(ip, port)) = addr.downcast_ref::<(Ipv6Addr, u16)>() {
        Some(SocketAddr::new(ip.into(), port))
    } else if let Some(text) = addr.downcast_ref::<&'static str>() {
        text.parse().ok()
    } else if let Some(text) = addr.downcast_ref::<String>() {
        text.parse().ok()
    } else if let Some(&(host, port)) = addr.downcast_ref::<(&'static str, u16)>() {
        parse_pair(host, port)
    } else if let Some((host, port)) = addr.downcast_ref::<(String, u16)>() {
        parse_pair(host, *port)
    } else {
        None
    };
    if let Some(single) = single {
        Some(vec![single])
    } else if let Some(addrs) = addr.downcast_ref::<Vec<SocketAddr>>() {
        Some(addrs.clone())
    } else {
        addr.downcast_ref::<&'static [SocketAddr]>()
            .map(|addrs| addrs.to_vec())
    }
}

/// Calls `f` with each address in turn until one succeeds; else returns the last error.
pub(crate) fn each_addr<R>(
    addrs: Vec<SocketAddr>,
    mut f: impl FnMut(SocketAddr) -> io::Result<R>,
) -> io::Result<R> {
    let mut last_error = None;
    for addr in addrs {
        match f(addr) {
            Ok(value) => return Ok(value),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_skip_resolution() {
        let expected = vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()];
        assert_eq!(literal(&"127.0.0.1:80"), Some(expected.clone()));
        assert_eq!(
            literal(&String::from("127.0.0.1:80")),
            Some(expected.clone())
        );
        assert_eq!(literal(&("127.0.0.1", 80u16)), Some(expected.clone()));
        assert_eq!(literal(&expected[0]), Some(expected.clone()));
        assert_eq!(literal(&"localhost:80"), None);
    }
}
