//! Is this loopback connection our own cloudflared's? Behind the tunnel every phone
//! arrives from 127.0.0.1, and only the `Cf-Connecting-Ip` header cloudflared adds says
//! which phone it is — but any local process can send that header too. So the header is
//! believed only when the kernel says the connecting socket belongs to the cloudflared
//! process the supervisor started: the socket's inode (from `/proc/net/tcp{,6}`, by its
//! address pair) must be among that process's open files (`/proc/<pid>/fd`).
//!
//! Linux only; elsewhere nothing is believed, which costs phones behind the tunnel only
//! their separate wrong-token backoffs and flood fairness, never access.

use std::net::{IpAddr, SocketAddr};

/// Whether the TCP connection from `peer` to our `local` address is held by process `pid`.
pub fn owned_by(pid: u32, peer: SocketAddr, local: SocketAddr) -> bool {
    let table = match peer.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    let Some(inode) = inode_of(&text, peer, local) else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
    })
}

/// The inode of the socket whose local address is `local_of_socket` and remote address
/// `remote_of_socket`, from a `/proc/net/tcp{,6}` table.
fn inode_of(table: &str, local_of_socket: SocketAddr, remote_of_socket: SocketAddr) -> Option<u64> {
    let (want_local, want_remote) = (hex_addr(local_of_socket), hex_addr(remote_of_socket));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (local.eq_ignore_ascii_case(&want_local) && remote.eq_ignore_ascii_case(&want_remote))
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// An address as the kernel prints it there: each 32-bit word of the IP in host byte
/// order (little-endian here), then the port in big-endian hex.
fn hex_addr(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_le_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_the_kernel_writes_them() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(hex_addr(a), "0100007F:1F90");
        let b: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(hex_addr(b), "00000000000000000000000001000000:01BB");
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                     0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000 0 4242 1 0 20 4 0 10 -1\n";
        let peer: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(inode_of(table, peer, ours), Some(4242));
        assert_eq!(inode_of(table, ours, peer), None, "the other end is not it");
    }

    #[test]
    fn a_connection_is_known_to_be_held_by_the_process_that_holds_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(
            owned_by(std::process::id(), peer, local),
            "this process holds it"
        );
        // PID 1 (init) does not hold our socket.
        assert!(!owned_by(1, peer, local));
        drop(client);
    }
}
