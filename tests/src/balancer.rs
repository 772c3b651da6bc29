//! A TCP balancer in front of several servers on loopback, standing in for what
//! an operator puts in front of publisher front ends (HAProxy in `mode tcp`,
//! IPVS, a cloud NLB): each new connection goes to the first server that
//! accepts it, and a connection whose server dies is cut, as a real
//! balancer's would be. A test reads how many connections each server got.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long a server may take to accept before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Vec<AtomicU64>>,
}

impl Balancer {
    /// Listens on a free port of 127.0.0.1 in front of `servers`, tried in
    /// this order for every connection.
    pub fn start(servers: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("the balancer cannot bind a port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the balancer cannot read its port: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Vec<AtomicU64>> =
            Arc::new(servers.iter().map(|_| AtomicU64::new(0)).collect());
        {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let (servers, connections) = (servers.clone(), connections.clone());
                    std::thread::spawn(move || forward(client, &servers, &connections));
                }
            });
        }
        Balancer {
            addr,
            stop,
            connections,
        }
    }

    /// `http://` and the balancer's address: where viewers and pushers go.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections handed to each server so far, in the order given to `start`.
    pub fn connections(&self) -> Vec<u64> {
        self.connections
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
    }
}

/// Hands `client` to the first server that accepts and copies bytes both ways
/// until either side ends; a client no server accepts is closed at once, as a
/// balancer with every backend down would.
fn forward(client: TcpStream, servers: &[SocketAddr], connections: &[AtomicU64]) {
    let Some(server) = servers.iter().enumerate().find_map(|(i, addr)| {
        let server = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).ok()?;
        connections[i].fetch_add(1, Ordering::Relaxed);
        Some(server)
    }) else {
        return;
    };
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || pipe(client_reader, server));
    pipe(server_reader, client);
    let _ = upstream.join();
}

/// Copies `from` into `to` until one of them ends, then closes both whole, so
/// the copy the other way stops too: a client whose server died sees its
/// connection end, not hang.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // Either may be closed already; that is the end wanted.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
