//! A notification receiver for the tests: an HTTP server on a port of its own that records
//! every call and answers as the test scripts it (an error, `Retry-After`, slowly), and that
//! can go down and come back on the same port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One call received.
#[derive(Debug, Clone)]
pub struct Call {
    /// When it arrived, since the receiver started.
    pub at: Duration,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// How the receiver answers one call.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 200.
    Ok,
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// 200 after a wait.
    Slow(Duration),
}

#[derive(Default)]
struct Shared {
    calls: Vec<Call>,
    /// Answers for the next calls, in order; 200 once they run out.
    script: VecDeque<Reply>,
}

/// The receiver; stopped when dropped.
pub struct Receiver {
    pub port: u16,
    started: Instant,
    shared: Arc<Mutex<Shared>>,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut receiver = Receiver {
            port,
            started: Instant::now(),
            shared: Arc::default(),
            runtime,
            stop: None,
            served: None,
        };
        receiver.up();
        receiver
    }

    /// The URL a sink sends to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/oncall?token=t0ps3cret", self.port)
    }

    /// Listens again on its port (after [`Receiver::down`]).
    pub fn up(&mut self) {
        let shared = Arc::clone(&self.shared);
        let started = self.started;
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let shared = Arc::clone(&shared);
            async move { answer(shared, started, headers, body).await }
        });
        let port = self.port;
        let listener = self.runtime.block_on(async {
            // The port was this receiver's a moment ago: wait for the system to let it go.
            let began = Instant::now();
            loop {
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(listener) => break listener,
                    Err(e) if began.elapsed() < Duration::from_secs(10) => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("cannot listen on {port} again: {e}"),
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.served = Some(self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        }));
    }

    /// Stops listening: calls are refused until [`Receiver::up`].
    pub fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            // Open keep-alive connections are closed, not waited for.
            self.runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
            });
        }
    }

    /// Answers the next calls as `replies` say, in order.
    pub fn script(&self, replies: &[Reply]) {
        self.shared.lock().unwrap().script.extend(replies.iter().copied());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().unwrap().calls.clone()
    }

    /// Waits until `enough` holds for the calls so far; panics after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, enough: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let began = Instant::now();
        loop {
            let calls = self.calls();
            if enough(&calls) {
                return calls;
            }
            assert!(
                began.elapsed() < within,
                "the receiver never saw {what} within {within:?}; it saw {} calls: {:?}",
                calls.len(),
                calls.iter().map(|c| &c.body).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The time since the receiver started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn answer(shared: Arc<Mutex<Shared>>, started: Instant, headers: HeaderMap, body: String) -> Response {
    let reply = {
        let mut shared = shared.lock().unwrap();
        shared.calls.push(Call {
            at: started.elapsed(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect(),
            body,
        });
        shared.script.pop_front().unwrap_or(Reply::Ok)
    };
    match reply {
        Reply::Ok => (StatusCode::OK, "{\"ok\":true}").into_response(),
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "scripted failure").into_response(),
        Reply::TooMany(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, "{\"ok\":true}").into_response()
        }
    }
}
