//! The services sample: Ethereum-style JSON-RPC with jsonrpsee (a server, an HTTP client and a
//! WebSocket client making a known set of calls and batches), TLS with rustls to server names of
//! an RPC provider, a DoH resolver, the telemetry service and an unlisted host, and curl fetching
//! from Python's http.server on the node's REST and metrics ports. Every server-side socket
//! counts the bytes it read and wrote: that is the TCP payload truth per connection.

use std::{
    collections::BTreeMap,
    fs, io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use jsonrpsee::{
    RpcModule,
    core::{client::ClientT, params::BatchRequestBuilder},
    http_client::HttpClientBuilder,
    rpc_params,
    server::{Server, serve_with_graceful_shutdown, stop_channel},
    ws_client::WsClientBuilder,
};
use pcap::Precision;
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::{
    capture::{self, CaptureSpec},
    netns::{self, Namespaces},
    truth::{CaptureTruth, Conn, Head},
};

/// The sample this module makes.
pub const SAMPLE: &str = "services-rpc-tls";
const NETNS: &str = "wp-svc";
const RPC_ADDR: &str = "127.0.0.10:8545";
const TLS_ADDR: &str = "127.0.0.11:443";
/// Server names the TLS clients ask for, and the category wakuprof's defaults give them.
const SERVER_NAMES: [(&str, &str); 4] = [
    ("mainnet.infura.io", "rpc"),
    ("cloudflare-dns.com", "other/doh"),
    ("telemetry.status.im", "other/telemetry"),
    ("example.org", "other/tls"),
];
/// The node's REST and metrics ports on loopback, served by Python's http.server.
const NODE_PORTS: [(u16, &str); 2] = [(8645, "node-rest"), (8008, "node-metrics")];
/// Bytes each TLS client writes (and the server echoes), in writes of 1,000.
const TLS_PAYLOAD: usize = 5_000;

#[derive(Serialize)]
struct Truth {
    #[serde(flatten)]
    head: Head,
    connections: Vec<ConnTruth>,
    /// Calls per method as the server's handlers counted them.
    calls_served: BTreeMap<String, u64>,
    /// Calls per (transport, method) as the clients made them; batches count each call.
    calls_made: Vec<CallTruth>,
}

/// One TCP connection: bytes each side wrote, as the server socket counted them (or curl said).
#[derive(Serialize)]
struct ConnTruth {
    #[serde(flatten)]
    conn: Conn,
    service: String,
    counted_by: &'static str,
}

#[derive(Serialize)]
struct CallTruth {
    transport: &'static str,
    method: &'static str,
    calls: u64,
    in_batch: bool,
}

/// A server-side stream that counts what passes.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::SeqCst);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The server-side counters of every accepted connection.
#[derive(Clone, Default)]
struct Accepted(Arc<Mutex<Vec<Accept>>>);

struct Accept {
    peer: SocketAddr,
    local: SocketAddr,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    service: String,
}

impl Accepted {
    fn wrap(&self, inner: TcpStream, service: &str) -> io::Result<Counted> {
        let (read, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let accept = Accept {
            peer: inner.peer_addr()?,
            local: inner.local_addr()?,
            read: read.clone(),
            written: written.clone(),
            service: service.to_owned(),
        };
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(accept);
        Ok(Counted {
            inner,
            read,
            written,
        })
    }

    fn truths(&self) -> anyhow::Result<Vec<ConnTruth>> {
        let list = self.0.lock().map_err(|_| anyhow!("poisoned"))?;
        Ok(list
            .iter()
            .map(|a| ConnTruth {
                conn: Conn {
                    dialer: a.peer,
                    listener: a.local,
                    bytes_dialer_to_listener: a.read.load(Ordering::SeqCst),
                    bytes_listener_to_dialer: a.written.load(Ordering::SeqCst),
                },
                service: a.service.clone(),
                counted_by: "the server's socket (bytes read and written)",
            })
            .collect())
    }
}

/// Makes the sample into `out_dir`.
pub fn make(out_dir: &Path) -> anyhow::Result<()> {
    let _ns = Namespaces::create(&[NETNS])?;
    let file = format!("{SAMPLE}.pcap");
    let filter = "tcp";
    let running = capture::start(CaptureSpec::loopback(NETNS, filter, out_dir.join(&file)))?;
    let result = thread::spawn(|| -> anyhow::Result<_> {
        netns::enter(NETNS)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(scenario())
    })
    .join()
    .map_err(|_| anyhow!("the services scenario panicked"))??;
    let (mut connections, calls_served, calls_made) = result;
    connections.extend(curl_node_ports()?);
    thread::sleep(Duration::from_millis(300));
    let stats = running.stop()?;
    ensure!(
        stats.dropped == 0,
        "libpcap dropped {} packets",
        stats.dropped
    );
    let truth = Truth {
        head: Head {
        sample: SAMPLE.into(),
        file,
        link_type: stats.linktype.get_name()?,
        made_by:
            "jsonrpsee 0.26 (server, HTTP and WebSocket clients), rustls 0.23 via tokio-rustls, \
                  curl and Python http.server"
                .into(),
        description: "JSON-RPC calls and batches over HTTP and WebSocket; TLS to an RPC provider, \
                      a DoH resolver, the telemetry host and an unlisted host; the node's REST and \
                      metrics ports"
            .into(),
        capture: CaptureTruth::new("lo", Some(NETNS), filter, Precision::Micro, &stats),
        },
        connections,
        calls_served,
        calls_made,
    };
    let path = out_dir.join(format!("{SAMPLE}.truth.json"));
    fs::write(&path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

type Scenario = (Vec<ConnTruth>, BTreeMap<String, u64>, Vec<CallTruth>);

/// The methods the server offers: name and the size of the hex string it answers with.
const METHODS: [(&str, usize); 5] = [
    ("eth_chainId", 4),
    ("eth_blockNumber", 8),
    ("eth_call", 64),
    ("eth_getBalance", 16),
    ("net_version", 2),
];

async fn scenario() -> anyhow::Result<Scenario> {
    let accepted = Accepted::default();
    let served: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut module = RpcModule::new(());
    for (name, size) in METHODS {
        let served = served.clone();
        module.register_method(name, move |_, _, _| {
            if let Ok(mut s) = served.lock() {
                *s.entry(name.to_owned()).or_default() += 1;
            }
            format!("0x{}", "a".repeat(size))
        })?;
    }
    let listener = TcpListener::bind(RPC_ADDR).await?;
    let (stop, server_handle) = stop_channel();
    let builder = Server::builder().to_service_builder();
    let methods: jsonrpsee::Methods = module.into();
    let rpc_accepted = accepted.clone();
    let server_stop = stop.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let Ok(sock) = rpc_accepted.wrap(sock, "jsonrpc") else {
                continue;
            };
            let svc = builder.clone().build(methods.clone(), server_stop.clone());
            tokio::spawn(serve_with_graceful_shutdown(
                sock,
                svc,
                server_stop.clone().shutdown(),
            ));
        }
    });
    let calls_made = clients().await?;
    tls(&accepted).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server_handle.stop().ok();
    drop(stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = served.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    Ok((accepted.truths()?, served, calls_made))
}

/// The calls each client makes, one by one: (method, times).
const SINGLE_CALLS: [(&str, u64); 4] = [
    ("eth_chainId", 3),
    ("eth_blockNumber", 2),
    ("eth_call", 4),
    ("net_version", 1),
];
/// The one batch each client sends.
const BATCH: [&str; 3] = ["eth_getBalance", "eth_blockNumber", "eth_getBalance"];

async fn calls(client: &impl ClientT, transport: &'static str) -> anyhow::Result<Vec<CallTruth>> {
    let mut made = Vec::new();
    for (method, times) in SINGLE_CALLS {
        for _ in 0..times {
            let _: String = client.request(method, rpc_params![]).await?;
        }
        made.push(CallTruth {
            transport,
            method,
            calls: times,
            in_batch: false,
        });
    }
    let mut batch = BatchRequestBuilder::new();
    for method in BATCH {
        batch.insert(
            method,
            rpc_params!["0x00000000000000000000000000000000deadbeef", "latest"],
        )?;
    }
    let answers = client.batch_request::<String>(batch).await?;
    ensure!(
        answers.num_successful_calls() == BATCH.len(),
        "batch answered in full"
    );
    let mut in_batch: BTreeMap<&str, u64> = BTreeMap::new();
    for m in BATCH {
        *in_batch.entry(m).or_default() += 1;
    }
    made.extend(in_batch.into_iter().map(|(method, calls)| CallTruth {
        transport,
        method,
        calls,
        in_batch: true,
    }));
    Ok(made)
}

async fn clients() -> anyhow::Result<Vec<CallTruth>> {
    let http = HttpClientBuilder::default().build(format!("http://{RPC_ADDR}"))?;
    let mut made = calls(&http, "http").await?;
    drop(http);
    let ws = WsClientBuilder::default()
        .build(format!("ws://{RPC_ADDR}"))
        .await?;
    made.extend(calls(&ws, "websocket").await?);
    drop(ws);
    Ok(made)
}

/// A rustls server with a certificate for every server name, and one client per name that
/// writes [`TLS_PAYLOAD`] bytes and reads them back.
async fn tls(accepted: &Accepted) -> anyhow::Result<()> {
    let names: Vec<String> = SERVER_NAMES.iter().map(|(n, _)| (*n).to_owned()).collect();
    let cert = rcgen::generate_simple_self_signed(names)?;
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der())
        .map_err(|e| anyhow!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let listener = TcpListener::bind(TLS_ADDR).await?;
    for (name, service) in SERVER_NAMES {
        let server = {
            let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
            let listener = &listener;
            async move {
                let (sock, _) = listener.accept().await?;
                let mut tls = acceptor.accept(accepted.wrap(sock, service)?).await?;
                let mut buf = vec![0u8; TLS_PAYLOAD];
                tls.read_exact(&mut buf).await?;
                tls.write_all(&buf).await?;
                tls.shutdown().await?;
                anyhow::Ok(())
            }
        };
        let client = async {
            let sock = TcpStream::connect(TLS_ADDR).await?;
            let server_name = rustls::pki_types::ServerName::try_from(name)?.to_owned();
            let mut tls = connector.connect(server_name, sock).await?;
            for chunk in vec![7u8; TLS_PAYLOAD].chunks(1000) {
                tls.write_all(chunk).await?;
            }
            let mut back = Vec::new();
            tls.read_to_end(&mut back).await?;
            ensure!(back.len() == TLS_PAYLOAD, "echo of {name}");
            anyhow::Ok(())
        };
        let (s, c) = tokio::join!(server, client);
        s.with_context(|| format!("TLS server for {name}"))?;
        c.with_context(|| format!("TLS client of {name}"))?;
    }
    Ok(())
}

/// Python's http.server on each node port of 127.0.0.1, fetched once by curl; the bytes are
/// curl's own counts (request, upload; response headers, body).
fn curl_node_ports() -> anyhow::Result<Vec<ConnTruth>> {
    let mut truths = Vec::new();
    for (port, service) in NODE_PORTS {
        let mut server = in_ns(&["python3", "-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start python3 -m http.server")?;
        let result = curl(port, service);
        stop(&mut server);
        truths.push(result?);
    }
    Ok(truths)
}

fn curl(port: u16, service: &str) -> anyhow::Result<ConnTruth> {
    netns::wait_for_listener(NETNS, "tcp", port)?;
    let out = in_ns(&["curl", "-s", "-o", "/dev/null"])
        .args([
            "-w",
            "%{size_request} %{size_upload} %{size_header} %{size_download} %{local_port}",
        ])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .context("run curl")?;
    let text = String::from_utf8(out.stdout)?;
    let n: Vec<u64> = text.split(' ').filter_map(|v| v.parse().ok()).collect();
    let [request, upload, header, download, local_port] = n[..] else {
        bail!("curl printed {text:?}");
    };
    Ok(ConnTruth {
        conn: Conn {
            dialer: format!("127.0.0.1:{local_port}").parse()?,
            listener: format!("127.0.0.1:{port}").parse()?,
            bytes_dialer_to_listener: request + upload,
            bytes_listener_to_dialer: header + download,
        },
        service: service.to_owned(),
        counted_by: "curl (size_request + size_upload, size_header + size_download)",
    })
}

fn in_ns(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS]).args(args);
    cmd
}

fn stop(child: &mut Child) {
    child.kill().ok();
    child.wait().ok();
}
