//! TLS for the SPICE port (QEMU's `tls-port` model), with rustls.
//!
//! **Why the I/O model changed.** A channel is served by two threads: one reads the client's
//! messages, and the channel's writer thread sends the outbox. With plain sockets each thread
//! has its own handle to the socket (`try_clone`). A TLS session is one state machine for both
//! directions (records are numbered, keys may be updated), so it cannot be cloned. Here both
//! handles share the session behind a mutex:
//! - the reader reads raw bytes from the socket *without* the lock, then takes it to feed them
//!   to the session and take out the plaintext (and to send what the session must answer, such
//!   as handshake messages or alerts);
//! - the writer takes the lock, hands the plaintext to the session and writes the encrypted
//!   records to the socket before letting go, so records leave in the order they were sealed.
//!
//! A client that stops reading blocks the writer with the lock held; its reader then waits, as
//! it would for any slow client. Shutting the socket down (client gone, server stopping) wakes
//! both. Raw bytes the reader got but the session could not take yet stay with the reader's
//! handle.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The server's certificate and key, from a QEMU-style x509 directory.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads `DIR/server-cert.pem` (sent with `DIR/ca-cert.pem` as its chain) and
    /// `DIR/server-key.pem`, the names QEMU's `x509-dir` uses.
    pub fn from_x509_dir(dir: &Path) -> Result<Self, TlsError> {
        let certs = |name: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let path = dir.join(name);
            let bad = |why: String| TlsError::File {
                path: path.clone(),
                why,
            };
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
            Ok(certs)
        };
        let mut chain = certs("server-cert.pem")?;
        let ca = certs("ca-cert.pem")?;
        for c in ca {
            if !chain.contains(&c) {
                chain.push(c);
            }
        }
        let key_path = dir.join("server-key.pem");
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::File {
            path: key_path.clone(),
            why: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Starts a server session on an accepted socket; the handshake runs on the first read.
    pub fn accept(&self, sock: TcpStream) -> io::Result<TlsStream> {
        let session = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            session: Arc::new(Mutex::new(session)),
            raw: Vec::new(),
            read_deadline: Mutex::new(None),
        })
    }
}

/// One handle to a TLS connection (see the module docs for how handles share the session).
pub struct TlsStream {
    sock: TcpStream,
    session: Arc<Mutex<ServerConnection>>,
    /// Raw bytes read from the socket that the session has not taken yet.
    raw: Vec<u8>,
    /// One read may need several socket reads (a handshake, records in pieces): they all
    /// share the read timeout, so a peer sending a byte at a time cannot stretch it.
    read_deadline: Mutex<Option<Instant>>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

/// Writes to a socket with MSG_NOSIGNAL (a vanished client gives EPIPE, never SIGPIPE).
struct NoSignal<'a>(&'a TcpStream);

impl Write for NoSignal<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        rustix::net::send(self.0.as_fd(), buf, rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends everything the session has sealed.
fn flush(session: &mut ServerConnection, sock: &TcpStream) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(&mut NoSignal(sock))?;
    }
    Ok(())
}

impl TlsStream {
    pub fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// Sets the read timeout (`None`: block forever); see `read_deadline`.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        *self.read_deadline.lock().unwrap() = t.map(|t| Instant::now() + t);
        self.sock.set_read_timeout(t)
    }

    /// A second handle to the same connection (for a writer thread).
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            sock: self.sock.try_clone()?,
            session: self.session.clone(),
            raw: Vec::new(),
            read_deadline: Mutex::new(None),
        })
    }

    /// Seals and sends `parts` as one piece (no other handle's records come in between).
    pub fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut session = self.session.lock().unwrap();
        for part in parts {
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let n = session.writer().write(rest)?;
                rest = &rest[n..];
                // Past the session's buffer limit it takes nothing more until sent.
                flush(&mut session, &self.sock)?;
            }
        }
        flush(&mut session, &self.sock)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut stalled = false;
        loop {
            {
                let mut session = self.session.lock().unwrap();
                match session.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed the socket without close_notify: the end of the stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if !self.raw.is_empty() {
                    let mut input: &[u8] = &self.raw;
                    let taken = session.read_tls(&mut input);
                    let taken = match taken {
                        Ok(n) => n,
                        // Its buffers are full of plaintext: hand that out first (once; a
                        // session that takes nothing twice in a row has failed).
                        Err(e) if e.kind() == io::ErrorKind::Other && !stalled => 0,
                        Err(e) => return Err(e),
                    };
                    stalled = taken == 0;
                    self.raw.drain(..taken);
                    if let Err(e) = session.process_new_packets() {
                        // Tell the peer (an alert) before giving up.
                        let _ = flush(&mut session, &self.sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    flush(&mut session, &self.sock)?;
                    continue;
                }
            }
            let deadline = *self.read_deadline.lock().unwrap();
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.sock.set_read_timeout(Some(left))?;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = (&self.sock).read(&mut chunk)?;
            if n == 0 {
                // Tell the session the stream ended (it then reports a clean or unclean end).
                let mut session = self.session.lock().unwrap();
                let _ = session.read_tls(&mut &[][..]);
                let _ = session.process_new_packets();
                return match session.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    Err(e) => Err(e),
                };
            }
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_parts(&[buf])?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        self.write_parts(&parts)?;
        Ok(parts.iter().map(|p| p.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
