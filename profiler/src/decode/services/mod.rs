//! Services over HTTP: HTTP/1.1 heads and bodies, WebSocket frames, Ethereum JSON-RPC, and the
//! TLS server name of HTTPS connections.

pub mod http;
pub mod jsonrpc;
pub mod tls_sni;
pub mod websocket;
