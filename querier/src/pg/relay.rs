//! The bytes between a PostgreSQL client and the protocol engine: TLS, and a
//! cap on every message the client sends.
//!
//! The engine (pgwire) accepts messages up to 1 GiB and buffers each one
//! whole before it looks at it, so 64 connections could make the querier
//! hold 64 GiB. Here every message's length is read from its header before
//! its body is forwarded, and one over [`MAX_MESSAGE_BYTES`] ends the
//! connection with an error naming the limit; nothing is buffered but the
//! header. The engine runs on one end of a socket pair; this relay owns the
//! client's TCP connection (and its TLS).

use std::io;

use datafusion_postgres::pgwire;
use pgwire::tokio::tokio_rustls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The largest message a client may send (a query, a bind of parameters):
/// the HTTP API's body limit, with room to spare.
pub(super) const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// How long the rest of a refused message is read and dropped before the
/// connection closes.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// `SSLRequest` and `GSSENCRequest`: the codes of the untyped requests a
/// client may send before its start-up message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Why the relay stopped reading from the client.
enum Stop {
    /// The client closed its side.
    Closed,
    /// A message longer than the limit: its length, and its body not read.
    TooLarge {
        length: usize,
        rest: usize,
    },
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof { Self::Closed } else { Self::Io(error) }
    }
}

/// How long a client has to ask for TLS (or not) and finish the handshake,
/// as long as the engine gives it to start up.
const NEGOTIATION_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one client: answers its TLS request (with `tls`, or "no"), then
/// relays to `engine` until either side closes. A client that says nothing
/// is dropped after [`NEGOTIATION_TIME`], freeing its connection slot.
pub(super) async fn serve(
    client: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    engine: UnixStream,
) -> io::Result<()> {
    let negotiated = tokio::time::timeout(NEGOTIATION_TIME, negotiate(client, tls)).await;
    match negotiated {
        Ok(Ok(Negotiated::Plain(client, head))) => relay(client, engine, Some(head)).await,
        Ok(Ok(Negotiated::Tls(client))) => relay(*client, engine, None).await,
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the client did not start up in time")),
    }
}

/// A client past its TLS request: in the clear with the start of its first
/// message read, or over TLS.
enum Negotiated {
    Plain(TcpStream, [u8; 8]),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn negotiate(mut client: TcpStream, tls: Option<pgwire::tokio::TlsAcceptor>) -> io::Result<Negotiated> {
    loop {
        let mut head = [0u8; 8];
        client.read_exact(&mut head).await?;
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match (length, code, &tls) {
            (8, SSL_REQUEST, Some(acceptor)) => {
                client.write_all(b"S").await?;
                return Ok(Negotiated::Tls(Box::new(acceptor.accept(client).await?)));
            }
            (8, SSL_REQUEST | GSSENC_REQUEST, _) => client.write_all(b"N").await?,
            _ => return Ok(Negotiated::Plain(client, head)),
        }
    }
}

/// Relays `client` and `engine` both ways; `head` is the start of the
/// client's first (untyped) message, when already read.
async fn relay<S>(client: S, engine: UnixStream, head: Option<[u8; 8]>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_in, mut client_out) = tokio::io::split(client);
    let (mut engine_in, mut engine_out) = engine.into_split();
    let stopped = {
        let mut to_client = std::pin::pin!(tokio::io::copy(&mut engine_in, &mut client_out));
        let mut to_engine = std::pin::pin!(forward(&mut client_in, &mut engine_out, head));
        tokio::select! {
            _ = &mut to_client => return Ok(()),
            stop = &mut to_engine => match stop {
                // The client closed its side: let the engine finish answering.
                Stop::Closed => {
                    let _ = to_client.await;
                    return Ok(());
                }
                other => other,
            },
        }
    };
    match stopped {
        Stop::TooLarge { length, rest } => {
            let message = format!(
                "a message of {length} bytes is larger than the limit of {MAX_MESSAGE_BYTES} bytes; send a shorter statement"
            );
            client_out.write_all(&super::fatal_error("54000", &message)).await?;
            // Read and drop what the client is still sending (for a while, a
            // buffer at a time): closing on unread bytes resets the
            // connection, and the client would never read the error.
            let (mut unread, mut dropped) = ((&mut client_in).take(rest as u64), tokio::io::sink());
            let _ = tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut unread, &mut dropped)).await;
            client_out.shutdown().await
        }
        Stop::Io(error) => Err(error),
        Stop::Closed => Ok(()),
    }
}

/// Forwards the client's messages to the engine, one header and one body at
/// a time, until the client closes or sends one over the limit.
async fn forward<R, W>(client: &mut R, engine: &mut W, head: Option<[u8; 8]>) -> Stop
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result: Result<(), Stop> = async {
        // The first message has no type byte: [length][code or protocol]…
        let head = match head {
            Some(head) => head,
            None => {
                let mut head = [0u8; 8];
                client.read_exact(&mut head).await?;
                head
            }
        };
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        body(client, engine, &head, length.saturating_sub(8), length).await?;
        // Then: [type][length][body], the length counting itself.
        loop {
            let mut header = [0u8; 5];
            client.read_exact(&mut header).await?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            body(client, engine, &header, length.saturating_sub(4), length).await?;
        }
    }
    .await;
    let stop = result.err().unwrap_or(Stop::Closed);
    if matches!(stop, Stop::Closed) {
        let _ = engine.shutdown().await;
    }
    stop
}

/// Forwards one message: its `header`, then `rest` bytes of body.
async fn body<R, W>(client: &mut R, engine: &mut W, header: &[u8], rest: usize, length: usize) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if length > MAX_MESSAGE_BYTES {
        return Err(Stop::TooLarge { length, rest });
    }
    engine.write_all(header).await?;
    let copied = tokio::io::copy(&mut (&mut *client).take(rest as u64), engine).await?;
    if copied < rest as u64 {
        return Err(Stop::Closed);
    }
    Ok(())
}
