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

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Tls(s) => s.sock().as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}
