//! Pod IPs from the node's loopback range. Linux routes all of 127.0.0.0/8 to `lo`,
//! so a process can bind any of these addresses without configuring anything, and
//! each pod gets its own address and its own port space, like a real pod IP.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;

/// The addresses of one range in use; clones share it.
#[derive(Debug, Clone)]
pub struct PodIps {
    range: Ipv4Net,
    used: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
}

/// An allocated address, returned to the range when dropped.
#[derive(Debug)]
pub struct PodIp {
    addr: Ipv4Addr,
    used: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
}

impl PodIp {
    /// The address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

impl Drop for PodIp {
    fn drop(&mut self) {
        lock(&self.used).remove(&self.addr);
    }
}

fn lock(m: &Mutex<BTreeSet<Ipv4Addr>>) -> std::sync::MutexGuard<'_, BTreeSet<Ipv4Addr>> {
    // The set stays consistent even if a holder panicked: every critical section is a
    // single insert or remove.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PodIps {
    /// An empty allocator over `range`.
    pub fn new(range: Ipv4Net) -> Self {
        Self {
            range,
            used: Arc::default(),
        }
    }

    /// The lowest free address, skipping the network address, the first host (`.1`,
    /// the conventional gateway) and the broadcast address; `None` when all are used.
    pub fn allocate(&self) -> Option<PodIp> {
        let mut used = lock(&self.used);
        let gateway = u32::from(self.range.network()) + 1;
        let addr = self
            .range
            .hosts()
            .filter(|a| u32::from(*a) != gateway && *a != self.range.broadcast())
            .find(|a| !used.contains(a))?;
        used.insert(addr);
        Some(PodIp {
            addr,
            used: self.used.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allocates_distinct_hosts_and_reuses_freed_ones() {
        let ips = PodIps::new("127.0.1.0/29".parse().unwrap());
        let all: Vec<PodIp> = std::iter::from_fn(|| ips.allocate()).collect();
        let addrs: Vec<String> = all.iter().map(|ip| ip.addr().to_string()).collect();
        assert_eq!(
            addrs,
            [
                "127.0.1.2",
                "127.0.1.3",
                "127.0.1.4",
                "127.0.1.5",
                "127.0.1.6"
            ]
        );
        drop(all);
        assert_eq!(ips.allocate().unwrap().addr().to_string(), "127.0.1.2");
    }
}
