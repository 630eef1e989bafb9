//! Admission of connections: how many a peer can make a daemon hold open.
//!
//! A [`Gate`] counts open connections in total and per key (an address
//! prefix, or a pinned peer id). When the total is at its cap, a new
//! connection closes the oldest *idle* one (no request in flight) rather
//! than waiting behind it, so a flood of idle or half-sent connections never
//! locks out a real client, and never eats the descriptors the daemon needs
//! for its own files. Each admitted connection holds a [`Pass`] until it ends.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// What to do when one key already holds its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerKey {
    /// Refuse the new connection (one address flooding).
    Refuse,
    /// Close that key's oldest connection (a pinned peer that reconnects).
    EvictOldest,
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("too many connections from this address")]
    PerKey,
    #[error("at the connection cap and every connection is busy")]
    Full,
}

struct Entry<K> {
    key: K,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

struct Registry<K> {
    next: u64,
    /// By admission order: the first idle entry is the one to close.
    entries: BTreeMap<u64, Entry<K>>,
    per_key: HashMap<K, usize>,
}

/// Counters, for logs and metrics.
#[derive(Debug, Default)]
pub struct GateStats {
    pub admitted: AtomicU64,
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
}

/// Connection admission with a total cap and a per-key cap.
pub struct Gate<K> {
    registry: Mutex<Registry<K>>,
    max_total: usize,
    max_per_key: usize,
    per_key_policy: PerKey,
    pub stats: GateStats,
}

impl<K: Clone + Eq + Hash> Gate<K> {
    /// At most `max_total` connections, `max_per_key` per key.
    pub fn new(max_total: usize, max_per_key: usize, per_key_policy: PerKey) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry {
                next: 0,
                entries: BTreeMap::new(),
                per_key: HashMap::new(),
            }),
            max_total: max_total.max(1),
            max_per_key: max_per_key.max(1),
            per_key_policy,
            stats: GateStats::default(),
        })
    }

    /// Admits a connection for `key`, closing an older one if a cap says so.
    pub fn admit(self: &Arc<Self>, key: K) -> Result<Pass<K>, Refused> {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if r.per_key.get(&key).copied().unwrap_or(0) >= self.max_per_key {
            match self.per_key_policy {
                PerKey::Refuse => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::PerKey);
                }
                PerKey::EvictOldest => {
                    let oldest = r
                        .entries
                        .iter()
                        .find(|(_, e)| e.key == key)
                        .map(|(id, _)| *id);
                    if let Some(id) = oldest {
                        self.evict(&mut r, id);
                    }
                }
            }
        }
        if r.entries.len() >= self.max_total {
            let idle = r
                .entries
                .iter()
                .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id);
            match idle {
                Some(id) => self.evict(&mut r, id),
                None => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::Full);
                }
            }
        }
        let id = r.next;
        r.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = CancellationToken::new();
        r.entries.insert(
            id,
            Entry {
                key: key.clone(),
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        *r.per_key.entry(key).or_default() += 1;
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Pass {
            id,
            gate: self.clone(),
            busy,
            evict,
        })
    }

    /// Tells connection `id` to close and stops counting it.
    fn evict(&self, r: &mut Registry<K>, id: u64) {
        if let Some(e) = Self::remove(r, id) {
            e.evict.cancel();
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(r: &mut Registry<K>, id: u64) -> Option<Entry<K>> {
        let e = r.entries.remove(&id)?;
        if let Some(n) = r.per_key.get_mut(&e.key) {
            *n -= 1;
            if *n == 0 {
                r.per_key.remove(&e.key);
            }
        }
        Some(e)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}

/// One admitted connection. Dropping it frees its place.
pub struct Pass<K: Clone + Eq + Hash> {
    id: u64,
    gate: Arc<Gate<K>>,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl<K: Clone + Eq + Hash> Pass<K> {
    /// Cancelled when the gate closes this connection to make room.
    pub fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// Marks a request in flight until the guard drops: a busy connection
    /// is never closed to make room for another.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.busy.clone())
    }
}

impl<K: Clone + Eq + Hash> Drop for Pass<K> {
    fn drop(&mut self) {
        let mut r = self.gate.registry.lock().unwrap_or_else(|p| p.into_inner());
        Gate::remove(&mut r, self.id);
    }
}

/// A request in flight (see [`Pass::busy`]).
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The next connection on `listener`. A failed accept (EMFILE and
/// friends) is logged and retried after a short pause: the descriptors
/// come back as connections end.
pub async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The key connections from `ip` are counted under: the address itself for
/// IPv4 (and IPv4-mapped IPv6), its /64 for IPv6, where one host commonly
/// holds a whole /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let gate = Gate::new(3, 10, PerKey::Refuse);
        let a = gate.admit(1).unwrap();
        let b = gate.admit(2).unwrap();
        let c = gate.admit(3).unwrap();
        let _busy = a.busy();
        // a is busy, so b (the oldest idle) is closed for d.
        let d = gate.admit(4).unwrap();
        assert!(!a.evicted().is_cancelled());
        assert!(b.evicted().is_cancelled());
        assert_eq!(gate.open(), 3);
        // Everything busy: refused.
        let (_c, _d) = (c.busy(), d.busy());
        assert_eq!(gate.admit(5).err(), Some(Refused::Full));
        drop(b);
        assert_eq!(gate.open(), 3, "an evicted pass was already uncounted");
    }

    #[test]
    fn per_key_caps_refuse_or_evict() {
        let gate = Gate::new(100, 2, PerKey::Refuse);
        let _a = gate.admit("x").unwrap();
        let _b = gate.admit("x").unwrap();
        assert_eq!(gate.admit("x").err(), Some(Refused::PerKey));
        assert!(gate.admit("y").is_ok());

        let gate = Gate::new(100, 2, PerKey::EvictOldest);
        let a = gate.admit("peer").unwrap();
        let _b = gate.admit("peer").unwrap();
        let _c = gate.admit("peer").unwrap();
        assert!(a.evicted().is_cancelled());
        assert_eq!(gate.open(), 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    }
}
