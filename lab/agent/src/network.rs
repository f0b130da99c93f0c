//! Pod networking: one bridge on the host, and per pod a network namespace
//! joined to it by a veth pair, with its own IP in 10.244.0.0/16. The host
//! reaches every pod IP directly; pods reach each other through the bridge.
//!
//! Node `i` (0-based) hands out 10.244.(i+1).2 to 10.244.(i+1).254.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use tokio::process::Command;

/// The host side of the pod network.
pub const BRIDGE: &str = "ferry0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const PREFIX: u8 = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("failed to run `{command}`: {reason}; the lab needs root and iproute2")]
    Command { command: String, reason: String },
    #[error("failed to allocate a pod IP on node {node}: all 253 addresses are in use")]
    Exhausted { node: usize },
}

async fn ip(args: &[&str]) -> Result<(), NetworkError> {
    let output =
        Command::new("ip")
            .args(args)
            .output()
            .await
            .map_err(|e| NetworkError::Command {
                command: format!("ip {}", args.join(" ")),
                reason: e.to_string(),
            })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Command {
            command: format!("ip {}", args.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Creates the bridge if missing (idempotent).
pub async fn ensure_bridge() -> Result<(), NetworkError> {
    if ip(&["link", "show", BRIDGE]).await.is_err() {
        ip(&["link", "add", BRIDGE, "type", "bridge"]).await?;
        ip(&["addr", "add", &format!("{GATEWAY}/{PREFIX}"), "dev", BRIDGE]).await?;
    }
    ip(&["link", "set", BRIDGE, "up"]).await
}

/// Removes the bridge (its veths go with their namespaces).
pub async fn remove_bridge() {
    let _ = ip(&["link", "delete", BRIDGE]).await;
}

/// Drops the host's neighbour entry of `addr` on the bridge, if any.
async fn forget_neighbour(addr: Ipv4Addr) {
    let _ = ip(&["neigh", "flush", "to", &addr.to_string(), "dev", BRIDGE]).await;
}

/// A pod's network: namespace, host-side veth, and IP.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
}

/// Names derived from a pod UID, short enough for interface names (15 bytes).
pub fn names_for(uid: &str) -> (String, String) {
    let id: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    (format!("ferry-{id}"), format!("fv{id}"))
}

impl Sandbox {
    /// Creates the namespace and its link; on failure, removes what was made.
    pub async fn create(uid: &str, ip_addr: Ipv4Addr) -> Result<Sandbox, NetworkError> {
        let (netns, veth) = names_for(uid);
        let sandbox = Sandbox {
            netns,
            veth,
            ip: ip_addr,
        };
        sandbox.remove().await;
        if let Err(e) = sandbox.wire().await {
            sandbox.remove().await;
            return Err(e);
        }
        Ok(sandbox)
    }

    async fn wire(&self) -> Result<(), NetworkError> {
        let ns = self.netns.as_str();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])
        .await?;
        ip(&["link", "set", &self.veth, "master", BRIDGE, "up"]).await?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/{PREFIX}", self.ip),
            "dev",
            "eth0",
        ])
        .await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        // Addresses are reused: the host may still map this one to the MAC
        // of a pod that is gone, and would send to it until the entry went
        // stale and failed its probes (about 9 s in which nothing on the
        // host, the probes included, reaches the new pod).
        forget_neighbour(self.ip).await;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
        ])
        .await
    }

    /// Deletes the namespace and the veth (idempotent). Processes still in
    /// the namespace must be stopped first.
    pub async fn remove(&self) {
        let _ = ip(&["link", "delete", &self.veth]).await;
        forget_neighbour(self.ip).await;
        let _ = ip(&["netns", "delete", &self.netns]).await;
    }
}

/// Hands out pod IPs of one node.
#[derive(Debug)]
pub struct IpPool {
    node: usize,
    used: Mutex<BTreeSet<u8>>,
    /// Where the next search starts: just past the last address handed out.
    next: Mutex<u8>,
}

impl IpPool {
    pub fn new(node: usize) -> Self {
        IpPool {
            node,
            used: Mutex::new(BTreeSet::new()),
            next: Mutex::new(2),
        }
    }

    /// The node's pod CIDR, for the Node object.
    pub fn cidr(&self) -> String {
        format!("10.244.{}.0/24", self.node + 1)
    }

    /// The first free address after the last one handed out, wrapping
    /// round (as host-local IPAM does): an address a pod just gave up is
    /// reused last, so that no other pod's neighbour cache still maps it
    /// to the gone pod's interface (a client pod, such as the controller
    /// verifying a new pod, would fail to connect for seconds).
    pub fn allocate(&self) -> Result<Ipv4Addr, NetworkError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = *next;
        let host = (start..=254u8)
            .chain(2..start)
            .find(|h| !used.contains(h))
            .ok_or(NetworkError::Exhausted { node: self.node })?;
        *next = if host == 254 { 2 } else { host + 1 };
        used.insert(host);
        Ok(Ipv4Addr::new(10, 244, self.node as u8 + 1, host))
    }

    pub fn release(&self, addr: Ipv4Addr) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.remove(&addr.octets()[3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_hand_out_and_reuse_addresses_per_node() {
        let pool = IpPool::new(1);
        assert_eq!(pool.cidr(), "10.244.2.0/24");
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 2, 3))
        );
        pool.release(a);
        // Round robin: the released address comes back only after the rest.
        assert_eq!(pool.allocate().unwrap(), Ipv4Addr::new(10, 244, 2, 4));
        for _ in 0..250 {
            pool.allocate().unwrap();
        }
        assert_eq!(pool.allocate().unwrap(), a);
        assert!(pool.allocate().is_err());
    }

    #[test]
    fn names_fit_interface_limits() {
        let (ns, veth) = names_for("0f8e5c2a-1b2c-4d5e-8f90-123456789abc");
        assert_eq!(ns, "ferry-0f8e5c2a1b2c");
        assert_eq!(veth, "fv0f8e5c2a1b2c");
        assert!(veth.len() <= 15);
    }
}
