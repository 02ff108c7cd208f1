//! A client connection: TCP, TLS over TCP, or unix stream, with the few operations the server
//! needs.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::tls::TlsStream;

/// A connected client socket.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Unix(UnixStream),
}

impl Conn {
    /// Whether this is a local (unix socket) client, which may receive fds.
    pub fn is_unix(&self) -> bool {
        matches!(self, Conn::Unix(_))
    }

    /// A second handle to the same socket (for a writer thread).
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Tls(s) => Conn::Tls(Box::new(s.try_clone()?)),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    /// Closes both directions, waking any thread blocked on the socket.
    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Tls(s) => s.sock().shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Sets the read timeout (`None`: block forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Tls(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Sets the write timeout (`None`: block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(t),
            Conn::Tls(s) => s.sock().set_write_timeout(t),
            Conn::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// Bounds the bytes the kernel holds unsent for this socket to `bytes` (`TCP_NOTSENT_LOWAT`;
    /// TCP and TLS only, nothing on unix sockets). The socket's send buffer otherwise grows to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default): seconds of video behind a slow link,
    /// queued where the server cannot see or drop it. With the bound a blocking write waits
    /// until the link has taken most of what was queued, so a backlog builds in the server's
    /// own queue instead, where it is a congestion signal.
    pub fn set_notsent_lowat(&self, bytes: u32) -> io::Result<()> {
        let sock = match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.sock(),
            Conn::Unix(_) => return Ok(()),
        };
        set_tcp_notsent_lowat(sock.as_fd(), bytes)
    }

    /// The peer's IP address (`None` for unix sockets).
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Conn::Tcp(s) => s.peer_addr().ok().map(|a| a.ip()),
            Conn::Tls(s) => s.sock().peer_addr().ok().map(|a| a.ip()),
            Conn::Unix(_) => None,
        }
    }

    /// A printable peer name for logs.
    pub fn peer(&self) -> String {
        match self {
            Conn::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp peer".into()),
            Conn::Tls(s) => s
                .sock()
                .peer_addr()
                .map(|a| format!("{a} (TLS)"))
                .unwrap_or_else(|_| "tls peer".into()),
            Conn::Unix(_) => "unix peer".into(),
        }
    }

    /// Writes all of `parts` (gathered), retrying on short writes.
    pub fn write_all_vectored(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        if let Conn::Tls(s) = self {
            return s.write_parts(parts);
        }
        let mut idx = 0;
        let mut off = 0;
        while idx < parts.len() {
            if parts[idx].len() == off {
                idx += 1;
                off = 0;
                continue;
            }
            let mut slices = Vec::with_capacity(parts.len() - idx);
            slices.push(IoSlice::new(&parts[idx][off..]));
            for p in &parts[idx + 1..] {
                slices.push(IoSlice::new(p));
            }
            let mut n = match self.send_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while n > 0 && idx < parts.len() {
                let left = parts[idx].len() - off;
                if n >= left {
                    n -= left;
                    idx += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
        }
        Ok(())
    }
}

impl Conn {
    /// `sendmsg` with MSG_NOSIGNAL: a client that went away gives EPIPE, never SIGPIPE (the
    /// library must not kill a host process that does not ignore SIGPIPE).
    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Conn::Tls(s) = self {
            return s.write_vectored(bufs);
        }
        let mut anc = rustix::net::SendAncillaryBuffer::default();
        rustix::net::sendmsg(self, bufs, &mut anc, rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, bytes)` (Linux, since 3.12).
fn set_tcp_notsent_lowat(fd: BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    const IPPROTO_TCP: i32 = 6;
    const TCP_NOTSENT_LOWAT: i32 = 25;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const u32, len: u32) -> i32;
    }
    let value = bytes;
    // SAFETY: `fd` is a valid open socket for the duration of the call (borrowed), and
    // `value` points to a live u32 whose size is passed as the option length.
    let rc = unsafe {
        setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            IPPROTO_TCP,
            TCP_NOTSENT_LOWAT,
            &value,
            std::mem::size_of::<u32>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes of this TCP socket's sent data the peer has acknowledged so far (`TCP_INFO`'s
/// `tcpi_bytes_acked`, Linux 4.1+): what the link really delivered, whatever the writer did.
pub fn tcp_bytes_acked(fd: BorrowedFd<'_>) -> Option<u64> {
    const IPPROTO_TCP: i32 = 6;
    const TCP_INFO: i32 = 11;
    /// Offset of `tcpi_bytes_acked` in `struct tcp_info` (after 8 one-byte fields, 24 u32s
    /// and the two u64 pacing rates).
    const BYTES_ACKED: usize = 120;
    unsafe extern "C" {
        fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
    }
    let mut info = [0u8; 256];
    let mut len = info.len() as u32;
    // SAFETY: `fd` is a valid open socket for the duration of the call (borrowed); `info` is a
    // writable buffer of `len` bytes and the kernel writes at most `len` bytes and updates it.
    let rc = unsafe {
        getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            IPPROTO_TCP,
            TCP_INFO,
            info.as_mut_ptr(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < BYTES_ACKED + 8 {
        return None;
    }
    let bytes: [u8; 8] = info[BYTES_ACKED..BYTES_ACKED + 8].try_into().ok()?;
    Some(u64::from_ne_bytes(bytes))
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Tls(s) => s.sock().as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn bytes_acked_counts_what_the_peer_received() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut rx, _) = listener.accept().unwrap();
        let conn = Conn::Tcp(tx.try_clone().unwrap());
        conn.set_notsent_lowat(32 * 1024).unwrap();
        let before = tcp_bytes_acked(conn.as_fd()).expect("TCP_INFO");
        let data = vec![7u8; 100_000];
        tx.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        rx.read_exact(&mut got).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let acked = tcp_bytes_acked(conn.as_fd()).unwrap() - before;
            if acked == data.len() as u64 {
                break;
            }
            assert!(acked <= data.len() as u64, "{acked} bytes acknowledged");
            assert!(
                std::time::Instant::now() < deadline,
                "{acked} bytes acknowledged"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
