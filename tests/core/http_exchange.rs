//! The shared request loop (`byte8_ledger_core::http::exchange`) against wiremock, with hooks of
//! the test's own: what the exchange observer sees of each attempt (bodies, statuses, attempt
//! numbers; a secret request body withheld), the body cap, an answer from another origin, the
//! one token refresh after a refusal, a hook that stops at once, and an admission refused.

use std::{sync::Mutex, time::Duration};

use async_trait::async_trait;
use byte8_ledger_core::{
    clock::ManualClock,
    error::{Error, Result},
    http::{
        Exchange, ExchangeObserver, Hooks, Peer, Redirects, Reply, Request, RequestStats, RetryConfig, Verdict,
        exchange::{self, Admission},
    },
};
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

/// One attempt as the observer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    attempt: u32,
    status: Option<u16>,
    request_body: Option<String>,
    response_body: Option<String>,
    failed: bool,
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl ExchangeObserver for Recorder {
    fn exchange(&self, e: &Exchange<'_>) {
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        self.0.lock().unwrap().push(Seen {
            attempt: e.attempt,
            status: e.status,
            request_body: text(e.request_body),
            response_body: text(e.response_body),
            failed: e.failure.is_some(),
        });
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// Hands out tokens `t0`, `t1`, … (a new one after each refusal), and says `Refresh` on 401 and
/// `Stop` on 418.
#[derive(Debug, Default)]
struct Tokens {
    issued: Mutex<u32>,
    refused: Mutex<Vec<String>>,
    deny: bool,
}

#[async_trait]
impl Hooks for Tokens {
    async fn admit(&self, request: &Request) -> Result<Admission> {
        if self.deny {
            return Err(Error::Deferred {
                provider: "test",
                message: format!("{} not sent", request.label_text()),
                retry_after: Duration::from_secs(60),
            });
        }
        Ok(Admission::default())
    }

    async fn credential(&self) -> Result<Option<SecretString>> {
        let n = *self.issued.lock().unwrap();
        Ok(Some(SecretString::from(format!("t{n}"))))
    }

    async fn refused(&self, credential: &SecretString) {
        self.refused.lock().unwrap().push(credential.expose_secret().to_owned());
        *self.issued.lock().unwrap() += 1;
    }

    fn verdict(&self, reply: &Reply) -> Verdict {
        match reply.status {
            401 => Verdict::Refresh,
            418 => Verdict::Stop,
            _ => Verdict::Decide,
        }
    }
}

fn fast() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        retry_timeout: Duration::from_secs(30),
    }
}

fn clock() -> ManualClock {
    ManualClock::new(DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap())
}

struct Fixture {
    http: reqwest::Client,
    retry: RetryConfig,
    clock: ManualClock,
    stats: RequestStats,
    recorder: Recorder,
}

impl Fixture {
    fn new(http: reqwest::Client) -> Self {
        Self { http, retry: fast(), clock: clock(), stats: RequestStats::default(), recorder: Recorder::default() }
    }

    fn peer(&self, max_body: usize, redirects: Redirects) -> Peer<'_> {
        Peer {
            http: &self.http,
            provider: "test",
            name: "Test",
            retry: &self.retry,
            clock: &self.clock,
            max_body,
            redirects,
            stats: Some(&self.stats),
            observer: Some(&self.recorder),
        }
    }
}

fn url(server: &MockServer, p: &str) -> Url {
    Url::parse(&format!("{}{p}", server.uri())).unwrap()
}

/// `GET p` on `server`, labelled with its path.
fn get(server: &MockServer, p: &str) -> Request {
    Request::new(Method::GET, url(server, p), p)
}

#[tokio::test]
async fn the_observer_sees_every_attempt_and_retries_are_counted() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/things/1"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/things/1"))
        .and(header("x-own", "v"))
        .and(header("authorization", "Bearer t0"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"ok":true}"#))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new(reqwest::Client::new());
    let request =
        Request::new(Method::PUT, url(&server, "/things/1"), "/things/1").header("x-own", "v").json(&b"{}"[..]);
    let reply = exchange::send(&f.peer(1024, Redirects::SameOrigin), &Tokens::default(), request).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], br#"{"ok":true}"#);
    assert!(!reply.refreshed);
    let body = Some("{}".to_owned());
    assert_eq!(
        f.recorder.seen(),
        [
            Seen {
                attempt: 0,
                status: Some(503),
                request_body: body.clone(),
                response_body: Some("busy".into()),
                failed: false
            },
            Seen {
                attempt: 1,
                status: Some(200),
                request_body: body,
                response_body: Some(r#"{"ok":true}"#.into()),
                failed: false
            },
        ]
    );
    assert_eq!(f.stats.total(), 2);
    assert_eq!(f.stats.retries(), 1);
}

#[tokio::test]
async fn a_post_answered_503_is_not_repeated_and_its_reply_is_returned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("maybe"))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new(reqwest::Client::new());
    let request = Request::new(Method::POST, url(&server, "/things"), "/things").json(&b"{}"[..]);
    let reply = exchange::send(&f.peer(1024, Redirects::SameOrigin), &Tokens::default(), request).await.unwrap();
    assert_eq!(reply.status, 503, "ambiguous: the caller looks the record up");
    assert_eq!(f.stats.retries(), 0);
}

#[tokio::test]
async fn a_secret_request_body_is_withheld_from_the_observer() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let f = Fixture::new(reqwest::Client::new());
    let request = Request::new(Method::POST, url(&server, "/pair"), "/pair").secret_json(&br#"{"key":"s3cret"}"#[..]);
    exchange::send(&f.peer(1024, Redirects::Never), &Tokens::default(), request).await.unwrap();
    let seen = f.recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_body, None);
    assert_eq!(seen[0].status, Some(200));
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2049)))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new(reqwest::Client::new());
    let request = get(&server, "/big");
    let err = exchange::send(&f.peer(2048, Redirects::SameOrigin), &Tokens::default(), request).await.unwrap_err();
    match &err {
        Error::Provider { status: Some(200), retryable: false, message, .. } => {
            assert!(message.contains("GET /big") && message.contains("larger than"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Exactly the cap is read.
    let f = Fixture::new(reqwest::Client::new());
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("y".repeat(2048)))
        .mount(&server)
        .await;
    let reply =
        exchange::send(&f.peer(2048, Redirects::SameOrigin), &Tokens::default(), get(&server, "/b")).await.unwrap();
    assert_eq!(reply.body.len(), 2048);
}

#[tokio::test]
async fn an_answer_from_another_origin_is_refused() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("foreign"))
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", format!("{}/x", elsewhere.uri())))
        .mount(&server)
        .await;
    // A client of the caller's own that follows any redirect.
    let f = Fixture::new(reqwest::Client::new());
    for redirects in [Redirects::SameOrigin, Redirects::Never] {
        let request = get(&server, "/r");
        let err = exchange::send(&f.peer(1024, redirects), &Tokens::default(), request).await.unwrap_err();
        assert!(
            matches!(&err, Error::Provider { retryable: false, message, .. } if message.contains("redirected")),
            "{redirects:?}: {err:?}"
        );
    }
    assert!(f.recorder.seen().iter().all(|s| s.response_body.is_none()), "the foreign body is never read");
    // With the policy's own client, the 3xx itself is the answer.
    let f = Fixture::new(reqwest::Client::builder().redirect(Redirects::Never.policy()).build().unwrap());
    let reply = exchange::send(&f.peer(1024, Redirects::Never), &Tokens::default(), get(&server, "/r")).await.unwrap();
    assert_eq!(reply.status, 302);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer t0"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new(reqwest::Client::new());
    let hooks = Tokens::default();
    let reply = exchange::send(&f.peer(1024, Redirects::SameOrigin), &hooks, get(&server, "/a")).await.unwrap();
    assert_eq!((reply.status, reply.refreshed), (200, true));
    assert_eq!(*hooks.refused.lock().unwrap(), ["t0"]);
    assert_eq!(f.stats.retries(), 0, "a refresh is not a retry");

    // Refused again after the refresh: the 401 is the answer, not a loop.
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(401)).expect(2).mount(&server).await;
    let hooks = Tokens::default();
    let reply = exchange::send(&f.peer(1024, Redirects::SameOrigin), &hooks, get(&server, "/a")).await.unwrap();
    assert_eq!((reply.status, reply.refreshed), (401, true));
}

#[tokio::test]
async fn stop_returns_at_once_and_a_refused_admission_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(418)).expect(1).mount(&server).await;
    let f = Fixture::new(reqwest::Client::new());
    let reply =
        exchange::send(&f.peer(1024, Redirects::SameOrigin), &Tokens::default(), get(&server, "/s")).await.unwrap();
    assert_eq!(reply.status, 418);

    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
    let hooks = Tokens { deny: true, ..Tokens::default() };
    let err = exchange::send(&f.peer(1024, Redirects::SameOrigin), &hooks, get(&server, "/d")).await.unwrap_err();
    assert!(err.is_deferred(), "{err:?}");
}

#[tokio::test]
async fn a_network_failure_names_the_request_and_is_reported_to_the_observer() {
    // Nothing listens there: the request is never sent, retried, then reported.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let f = Fixture::new(reqwest::Client::new());
    let u = Url::parse(&format!("http://127.0.0.1:{port}/n")).unwrap();
    let err =
        exchange::send(&f.peer(1024, Redirects::SameOrigin), &Tokens::default(), Request::new(Method::POST, u, "/n"))
            .await
            .unwrap_err();
    match &err {
        Error::Http { message, .. } => assert!(message.starts_with("POST /n:"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.outcome_unknown(), "never sent: repeating it is harmless");
    let seen = f.recorder.seen();
    assert_eq!(seen.len(), 4, "first attempt and three retries: {seen:?}");
    assert!(seen.iter().all(|s| s.failed && s.status.is_none()));
}

/// A one-shot HTTP/1.1 server answering 200 with `parts` as separate chunks of a chunked body
/// (no `Content-Length`), each written and flushed apart, so that the client reads them one by
/// one. Answers its address.
async fn chunked_server(parts: Vec<&'static str>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended before its headers did");
            request.extend_from_slice(&buf[..n]);
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.flush().await.unwrap();
        for part in parts {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // The client may stop reading (a body over the cap): what it does not read is not an error here.
            if socket.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes()).await.is_err() {
                return;
            }
            let _ = socket.flush().await;
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
        let _ = socket.flush().await;
    });
    addr
}

#[tokio::test]
async fn a_body_in_several_chunks_is_read_whole_and_its_cap_counts_every_chunk() {
    let parts = vec!["{\"a\":", "\"first\",", "\"b\":\"second\"}"];
    let whole: String = parts.concat();
    let addr = chunked_server(parts.clone()).await;
    let f = Fixture::new(reqwest::Client::new());
    let request = Request::new(Method::GET, Url::parse(&format!("http://{addr}/chunks")).unwrap(), "/chunks");
    let reply = exchange::send(&f.peer(1024, Redirects::SameOrigin), &Tokens::default(), request).await.unwrap();
    assert_eq!(std::str::from_utf8(&reply.body).unwrap(), whole);
    let seen = f.recorder.seen();
    assert_eq!(seen.last().and_then(|s| s.response_body.clone()).as_deref(), Some(whole.as_str()), "observed whole");

    // Each chunk is under the cap, the first two together are over it.
    let addr = chunked_server(parts).await;
    let f = Fixture::new(reqwest::Client::new());
    let request = Request::new(Method::GET, Url::parse(&format!("http://{addr}/chunks")).unwrap(), "/chunks");
    let err = exchange::send(&f.peer(12, Redirects::SameOrigin), &Tokens::default(), request).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}
