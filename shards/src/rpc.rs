//! One request, one response, one stream: both sides of a call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::wire::{
    byte_budget, connection_budget, read_frame, read_frame_within, write_frame, ByteBudget, Request, Response,
    WireError,
};

/// Connections a server holds at once; more are refused.
pub const CONNECTIONS_MAX: usize = 4096;

/// How long a peer may take to send a whole request.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call got no response.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Sends a request on a new stream and waits (at most `timeout`) for its response.
pub async fn call(connection: &quinn::Connection, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let body = request.encode().map_err(WireError::from)?;
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        write_frame(&mut send, &body).await?;
        send.finish().map_err(WireError::from)?;
        let (kind, payload) = read_frame(&mut recv).await?;
        Ok::<_, CallError>(Response::decode(kind, &payload)?)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout(timeout))?
}

/// Serves every stream of a connection until it closes: each stream carries one request,
/// answered by `handle`. A request that cannot be read gets an error frame and its stream
/// is closed; the others go on.
pub async fn serve_connection<H, F>(connection: quinn::Connection, handle: Arc<H>, budget: ByteBudget)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let own = connection_budget();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let handle = handle.clone();
        let (budget, own) = (budget.clone(), own.clone());
        tokio::spawn(async move {
            let mut held = None;
            let response = match tokio::time::timeout(
                REQUEST_READ_TIMEOUT,
                read_frame_within(&mut recv, &[&own, &budget]),
            )
            .await
            {
                Err(_) => Response::error(super::wire::error_code::MALFORMED, "the request was not sent in time"),
                Ok(Err(WireError::Read(_))) => return, // the peer went away
                Ok(Err(error)) => error.response(),
                Ok(Ok((kind, payload, permit))) => {
                    held = Some(permit);
                    let request = Request::decode(kind, &payload);
                    drop(payload);
                    match request {
                        Ok(request) => handle(request).await,
                        Err(error) => error.response(),
                    }
                }
            };
            drop(held);
            let _ = recv.stop(0u32.into());
            let body = response.encode().unwrap_or_else(|error| {
                Response::error(super::wire::error_code::PROTOCOL, error).encode().expect("a short error frame")
            });
            if write_frame(&mut send, &body).await.is_ok() {
                let _ = send.finish();
                let _ = send.stopped().await;
            }
        });
    }
}

/// Accepts connections on `endpoint` and serves each with `handle` until `shutdown` resolves;
/// then closes the endpoint. With `peer` set, a connection whose peer certificate does not name
/// that role (`tls::peer_named`) is closed before any request is read.
pub async fn serve_endpoint<H, F>(
    endpoint: &quinn::Endpoint,
    handle: Arc<H>,
    peer: Option<&'static str>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let budget = byte_budget();
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let accept = async {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(slot) = connections.clone().try_acquire_owned() else {
                incoming.refuse(); // as many connections as it serves
                continue;
            };
            let (handle, budget) = (handle.clone(), budget.clone());
            tokio::spawn(async move {
                if let Ok(connection) = incoming.await {
                    if peer.is_some_and(|role| !super::tls::peer_named(&connection, role)) {
                        connection.close(1u32.into(), b"this certificate's role may not call here");
                    } else {
                        serve_connection(connection, handle, budget).await;
                    }
                }
                drop(slot);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    endpoint.close(0u32.into(), b"shutting down");
}
