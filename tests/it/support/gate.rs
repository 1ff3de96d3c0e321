//! A TCP forwarder a test can close and open again: the way to take a real server (OpenBao)
//! off the network and bring it back with its state, as a network outage does. Closed, the
//! port refuses connections and every forwarded connection is cut.

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Gate {
    /// Forwards a free loopback port to `target`; open at first.
    pub fn new(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let (is_open, is_done) = (open.clone(), done.clone());
        std::thread::spawn(move || {
            let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            let mut listener = Some(listener);
            while !is_done.load(SeqCst) {
                if !is_open.load(SeqCst) {
                    // Refuse: no listener; cut what is open.
                    listener = None;
                    for c in conns.lock().unwrap().drain(..) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(addr) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener.insert(l)
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(target) {
                            let mut held = conns.lock().unwrap();
                            held.push(client.try_clone().unwrap());
                            held.push(server.try_clone().unwrap());
                            pipe(client, server);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => {}
                }
            }
        });
        Gate { addr, open, done }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&self) {
        self.open.store(false, SeqCst);
    }

    /// Forwards again.
    pub fn open(&self) {
        self.open.store(true, SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.done.store(true, SeqCst);
    }
}

/// Copies both ways until either side ends.
fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    copy(a, b2);
    copy(b, a2);
}
