//! A TCP proxy on loopback that injects network faults between the origin
//! and an agent: cut every connection (now, or once N bytes went through),
//! stall (hold every byte, both ways, connections stay open), and refuse
//! (accept and close at once: the agent looks unreachable).
//!
//! Plain threads: one acceptor, two pumps per connection. Counts the bytes
//! it forwards in each direction, so a test can assert what went over the
//! wire.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Hold every byte (both directions) without closing anything.
    Stall,
    /// Accept new connections and close them at once; cut open ones.
    Refuse,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<Option<SocketAddr>>,
    mode: Mutex<Mode>,
    conns: Mutex<Vec<TcpStream>>,
    /// Origin → agent bytes forwarded.
    up: AtomicU64,
    /// Agent → origin bytes forwarded.
    down: AtomicU64,
    /// Cut every connection once `up` reaches this (one shot; 0 = unarmed).
    cut_at_up: AtomicU64,
    cuts: AtomicU64,
    accepted: AtomicU64,
    /// Cut everything and refuse from then on once `up` reaches this (one shot; 0 = unarmed).
    refuse_at_up: AtomicU64,
    /// Freeze the open connections once `up` reaches this (one shot; 0 = unarmed).
    freeze_at_up: AtomicU64,
    /// Connections numbered below this are frozen: no byte moves, nothing closes.
    frozen_below: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode lock")
    }

    fn cut_all(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().expect("conns lock"));
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        if !conns.is_empty() {
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The proxy; stops (and cuts every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where the origin should connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:<free port>`; forwards once [`FaultProxy::set_target`] is called.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            target: Mutex::new(None),
            mode: Mutex::new(Mode::Pass),
            conns: Mutex::new(Vec::new()),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cut_at_up: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refuse_at_up: AtomicU64::new(0),
            freeze_at_up: AtomicU64::new(0),
            frozen_below: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(&listener, &s));
        Self { addr, shared }
    }

    /// `https://127.0.0.1:PORT`, for `agent add --endpoint`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("target lock") = Some(target);
    }

    /// Switches mode; `Refuse` also cuts the open connections.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
        if mode == Mode::Refuse {
            self.shared.cut_all();
        }
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        self.shared.cut_all();
    }

    /// Cuts every open connection once `bytes` more have gone origin → agent.
    pub fn cut_after_up_bytes(&self, bytes: u64) {
        let at = self.shared.up.load(Ordering::SeqCst) + bytes.max(1);
        self.shared.cut_at_up.store(at, Ordering::SeqCst);
    }

    /// Once `bytes` more have gone origin → agent, cuts every connection and
    /// refuses new ones (the agent went away for good, mid-push).
    pub fn refuse_after_up_bytes(&self, bytes: u64) {
        let at = self.shared.up.load(Ordering::SeqCst) + bytes.max(1);
        self.shared.refuse_at_up.store(at, Ordering::SeqCst);
    }

    /// Once `bytes` more have gone origin → agent, freezes every open
    /// connection for good (no byte moves either way, nothing is closed);
    /// connections opened later pass.
    pub fn freeze_after_up_bytes(&self, bytes: u64) {
        let at = self.shared.up.load(Ordering::SeqCst) + bytes.max(1);
        self.shared.freeze_at_up.store(at, Ordering::SeqCst);
    }

    /// Origin → agent bytes forwarded so far.
    pub fn up_bytes(&self) -> u64 {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Agent → origin bytes forwarded so far.
    pub fn down_bytes(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// How many times connections were cut.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let target = *shared.target.lock().expect("target lock");
        let (Some(target), Mode::Pass | Mode::Stall) = (target, shared.mode()) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut conns = shared.conns.lock().expect("conns lock");
            for s in [&client, &server] {
                if let Ok(c) = s.try_clone() {
                    conns.push(c);
                }
            }
        }
        for (from, to, up) in [(&client, &server, true), (&server, &client, false)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let s = shared.clone();
            std::thread::spawn(move || pump(from, to, up, id, &s));
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, id: u64, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 16 * 1024];
    let counter = if up { &shared.up } else { &shared.down };
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        // Stalled or frozen: read nothing, so TCP back-pressure holds the sender.
        if shared.mode() == Mode::Stall || id < shared.frozen_below.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        while (shared.mode() == Mode::Stall || id < shared.frozen_below.load(Ordering::SeqCst))
            && !shared.stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let total = counter.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let refuse = shared.refuse_at_up.load(Ordering::SeqCst);
        if up
            && refuse > 0
            && total >= refuse
            && shared
                .refuse_at_up
                .compare_exchange(refuse, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            *shared.mode.lock().expect("mode lock") = Mode::Refuse;
            shared.cut_all();
            break;
        }
        let freeze = shared.freeze_at_up.load(Ordering::SeqCst);
        if up
            && freeze > 0
            && total >= freeze
            && shared
                .freeze_at_up
                .compare_exchange(freeze, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let next = shared.accepted.load(Ordering::SeqCst);
            shared.frozen_below.store(next, Ordering::SeqCst);
        }
        let at = shared.cut_at_up.load(Ordering::SeqCst);
        if up
            && at > 0
            && total >= at
            && shared
                .cut_at_up
                .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            shared.cut_all();
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
