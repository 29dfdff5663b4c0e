//! Whether a request's client is still there. actix-web lets a handler run on after its client
//! went away (actix/actix-web#3462), so a slow read would keep its statements running for
//! nobody. `serve` keeps, for each connection, a duplicate of its socket ([`on_connect`]), and
//! the request deadline (`http::deadline`) races a read's handler against the client's end of
//! the stream on it ([`Peer::gone`]), cancelling the read's statements when it comes.
//!
//! Only reads (GET) are watched: a client may half-close its side once its request is sent and
//! still wait for the answer, which cannot be told from a departure, and a write must not be
//! stopped on a guess.

use std::any::Any;
use std::os::fd::AsFd;
use std::sync::Arc;

use actix_web::dev::Extensions;

/// A duplicate of a connection's socket, only ever peeked at.
#[derive(Clone)]
pub struct Peer(Arc<tokio::net::TcpStream>);

/// `HttpServer::on_connect`: remembers a duplicate of each TCP connection's socket.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let duplicate = stream
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(|socket| {
            socket.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(socket)
        });
    match duplicate {
        Ok(socket) => {
            data.insert(Peer(Arc::new(socket)));
        }
        Err(error) => tracing::debug!(%error, "no watch on this connection's client"),
    }
}

impl Peer {
    /// Resolves when the client has closed the connection (or it broke). Pends while it is
    /// open, and for good once the client sends anything more (a pipelined request): bytes
    /// waiting to be read cannot be told from an end.
    pub async fn gone(&self) {
        let mut byte = [0u8; 1];
        match self.0.peek(&mut byte).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}
