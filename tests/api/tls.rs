//! Native TLS: HTTPS and WSS with a certificate generated here and a client that verifies it,
//! a plain HTTP client told what to do, and a renewed certificate served without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aimcs_tests::settings::TlsConfig;
use aimcs_tests::{TestApp, raw, spawn_app_with};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost`, as PEM, and its DER form.
struct Generated {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn generate() -> Generated {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    Generated {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        der: cert.der().clone(),
    }
}

fn install(dir: &Path, generated: &Generated) {
    std::fs::write(dir.join("cert.pem"), &generated.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &generated.key_pem).unwrap();
}

async fn spawn_tls(dir: &Path) -> TestApp {
    let tls = TlsConfig {
        cert_path: dir.join("cert.pem"),
        key_path: dir.join("key.pem"),
        reload_interval_secs: 1_u64.try_into().unwrap(),
    };
    spawn_app_with(move |settings| settings.server.tls = Some(tls)).await
}

/// A client trusting exactly `roots`.
fn connector(roots: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    app: &TestApp,
    connector: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the certificate verifies")
}

#[tokio::test]
async fn https_serves_the_api_to_a_client_that_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate();
    install(dir.path(), &generated);
    let app = spawn_tls(dir.path()).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(generated.cert_pem.as_bytes()).unwrap(),
        )
        .resolve("localhost", app.addr)
        .build()
        .unwrap();

    let response = client
        .get(format!("https://localhost:{}/health", app.addr.port()))
        .send()
        .await
        .expect("HTTPS works");

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
}

#[tokio::test]
async fn wss_carries_the_websocket_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate();
    install(dir.path(), &generated);
    let app = spawn_tls(dir.path()).await;
    let stream = tls_connect(&app, &connector(&[&generated.der])).await;

    let url = format!("wss://localhost:{}/ws/audio", app.addr.port());
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("the upgrade succeeds over TLS");
    let greeting = socket.next().await.unwrap().unwrap();
    socket
        .send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    let pong = socket.next().await.unwrap().unwrap();

    assert!(
        greeting
            .to_text()
            .unwrap()
            .contains(r#""type":"connection""#)
    );
    assert!(pong.to_text().unwrap().contains(r#""type":"pong""#));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_by_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &generate());
    let app = spawn_tls(dir.path()).await;
    let stranger = generate();

    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let result = connector(&[&stranger.der])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;

    assert!(result.is_err(), "an unverified server must not be trusted");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_readable_400_and_the_port_keeps_serving_tls() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate();
    install(dir.path(), &generated);
    let app = spawn_tls(dir.path()).await;

    let answer = raw::exchange(app.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;

    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains(r#""code":"tls_required""#), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    tls_connect(&app, &connector(&[&generated.der])).await;
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (generate(), generate());
    install(dir.path(), &first);
    let app = spawn_tls(dir.path()).await;
    let trusting_both = connector(&[&first.der, &second.der]);
    let served = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served(&tls_connect(&app, &trusting_both).await), first.der);

    install(dir.path(), &second);

    let renewed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if served(&tls_connect(&app, &trusting_both).await) == second.der {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(renewed.is_ok(), "the renewed certificate was never served");
    assert_eq!(
        served(&tls_connect(&app, &connector(&[&second.der])).await),
        second.der
    );
}

#[tokio::test]
async fn an_unusable_renewal_keeps_the_previous_certificate_until_a_usable_one_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (generate(), generate());
    install(dir.path(), &first);
    let app = spawn_tls(dir.path()).await;
    let trusting_both = connector(&[&first.der, &second.der]);
    let served = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    };

    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(served(&tls_connect(&app, &trusting_both).await), first.der);

    install(dir.path(), &second);
    let renewed = tokio::time::timeout(Duration::from_secs(10), async {
        while served(&tls_connect(&app, &trusting_both).await) != second.der {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(renewed.is_ok(), "the usable renewal was never served");
}
