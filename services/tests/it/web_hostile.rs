//! Hostile clients against the web app running as a process (`pizza serve web` beside `pizza
//! broker`, or `pizza demo`), over real sockets: idle and half-sent requests, huge forms, chosen
//! usernames, live streams held open through a SIGTERM, too many live streams, and a health check
//! asked while the services are down.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, start_demo, start_demo_with_banner};

/// A process of ours, killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigterm(&self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits up to `limit` for the process to exit; its exit status and how long it took.
    fn exit_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// `pizza broker`: the embedded broker alone, and its bootstrap address.
fn broker() -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pizza"))
        .arg("broker")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line.trim().to_owned())
}

/// `pizza serve web` on a free port with `env`, once it accepts connections.
fn web(brokers: &str, data_dir: &Path, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pizza"))
        .args([
            "serve",
            "web",
            "--brokers",
            brokers,
            "--listen",
            &addr.to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the web app did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, addr)
}

/// The web app alone on a broker of its own (no service runs).
struct WebAlone {
    web: Proc,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _broker: Proc,
}

fn web_alone(env: &[(&str, &str)]) -> WebAlone {
    let (broker, brokers) = broker();
    let dir = tempfile::tempdir().unwrap();
    let (web, addr) = web(&brokers, &dir.path().join("data"), env);
    WebAlone {
        web,
        addr,
        dir,
        _broker: broker,
    }
}

/// A response read to the end (`Connection: close`).
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn cookie(&self) -> String {
        self.header("set-cookie")
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
}

fn request(method: &str, path: &str, cookie: Option<&str>, json: Option<&str>) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(body) = json {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    req
}

fn send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    // A server that refuses a large body early may close before all of it is written.
    let _ = s.write_all(bytes);
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => panic!("reading the reply: {e} (after {} bytes)", raw.len()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, cookie: Option<&str>, json: Option<&str>) -> Reply {
    send_raw(
        addr,
        request(method, path, cookie, json).as_bytes(),
        Duration::from_secs(20),
    )
}

/// Logs in through the JSON API; the session cookie.
fn login(addr: SocketAddr, user: &str) -> String {
    let r = send(
        addr,
        "POST",
        "/api/login",
        None,
        Some(&format!(r#"{{"username":"{user}"}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie()
}

/// Places an order through the JSON API; its id and the session cookie that remembers it.
fn place(addr: SocketAddr, cookie: &str) -> (String, String) {
    let order = r#"{"sauce":"Tomato","cheese":"Gouda","main_topping":"Pork"}"#;
    let r = send(addr, "POST", "/api/orders", Some(cookie), Some(order));
    assert_eq!(r.status, 201, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    (v["order_id"].as_str().unwrap().to_owned(), r.cookie())
}

/// Opens a live stream and reads its head; the socket stays open.
fn open_stream(addr: SocketAddr, order_id: &str, cookie: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = request("GET", &format!("/orders/{order_id}/events"), Some(cookie), None);
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the stream closed in its head");
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, s)
}

/// Whether the server closes `s` within `limit` (reads until end of stream or a reset).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if start.elapsed() < limit => continue,
            Ok(_) => return false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// Slowloris: sockets that never finish their headers (or never start) are closed after the
/// header read timeout, and while they hold every connection the server allows, a real customer
/// still gets served once they are gone.
#[test]
fn idle_and_half_sent_requests_are_closed_and_a_customer_is_still_served() {
    let w = web_alone(&[("PIZZA_HEADER_TIMEOUT", "1s"), ("PIZZA_MAX_CONNECTIONS", "32")]);
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = TcpStream::connect(w.addr).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    .unwrap();
            }
            s
        })
        .collect();
    let start = Instant::now();
    let r = send(w.addr, "GET", "/login", None, None);
    assert_eq!(r.status, 200);
    eprintln!(
        "a customer behind 40 idle sockets was served in {:?}",
        start.elapsed()
    );
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "idle socket {i} is still open {:?} after it connected",
            start.elapsed()
        );
    }
}

/// A live stream open on an order that never finishes must not hold the web app's exit.
#[test]
fn sigterm_ends_live_streams_and_the_web_app_exits() {
    let mut w = web_alone(&[]);
    let cookie = login(w.addr, "sse");
    let (order_id, cookie) = place(w.addr, &cookie);
    let (status, mut stream) = open_stream(w.addr, &order_id, &cookie);
    assert_eq!(status, 200);
    w.web.sigterm();
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "the live stream stayed open after SIGTERM"
    );
    let (exit, took) = w
        .web
        .exit_within(Duration::from_secs(20))
        .expect("the web app exits within 20 s of SIGTERM");
    assert!(exit.success(), "{exit}");
    eprintln!("exited {took:?} after SIGTERM with a live stream open");
}

/// A username that smuggles newlines would have set the session's CSRF token (to nothing) and its
/// list of recent orders, which then answered 200 for an order that does not exist (an oracle for
/// which ids exist). The old payload was `username \n csrf \n recent,orders`.
#[test]
fn a_username_cannot_choose_its_sessions_token_or_orders() {
    let w = web_alone(&[]);
    let evil = r#"{"username":"e\n\n0000dead,"}"#;
    let r = send(w.addr, "POST", "/api/login", None, Some(evil));
    if r.status == 200 {
        let oracle = send(w.addr, "GET", "/api/orders/0000dead", Some(&r.cookie()), None);
        panic!(
            "a username with newlines logged in; /api/orders/0000dead then answered {}",
            oracle.status
        );
    }
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("printable"), "{}", r.body);
    for name in ["bidi\u{202e}x", "ta\tb", "nul\u{0}x"] {
        let body = serde_json::json!({ "username": name }).to_string();
        assert_eq!(
            send(w.addr, "POST", "/api/login", None, Some(&body)).status,
            400,
            "{name:?}"
        );
    }
    let cookie = login(w.addr, "eve");
    assert_eq!(
        send(w.addr, "GET", "/api/orders/0000dead", Some(&cookie), None).status,
        404
    );
}

/// Forms are a few fields: a 2 MB body is refused before anything parses it.
#[test]
fn large_bodies_are_refused() {
    let w = web_alone(&[]);
    let body = "a=b&".repeat(500_000);
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = send_raw(w.addr, req.as_bytes(), Duration::from_secs(20));
    assert_eq!(r.status, 413, "{}", r.body);
    let big = format!(r#"{{"username":"{}"}}"#, "x".repeat(100_000));
    let r = send(w.addr, "POST", "/api/login", None, Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
}

/// One customer cannot hold more than a few live streams open.
#[test]
fn live_streams_are_capped_per_customer() {
    let w = web_alone(&[]);
    let cookie = login(w.addr, "many");
    let (order_id, cookie) = place(w.addr, &cookie);
    let mut open = Vec::new();
    let refused = loop {
        let (status, s) = open_stream(w.addr, &order_id, &cookie);
        if status != 200 || open.len() > 64 {
            break status;
        }
        open.push(s);
    };
    assert_eq!(refused, 429, "after {} streams", open.len());
    assert_eq!(open.len(), 8);
    // Closing one makes room for one.
    drop(open.pop());
    let start = Instant::now();
    loop {
        let (status, s) = open_stream(w.addr, &order_id, &cookie);
        if status == 200 {
            open.push(s);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no room after a stream closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sessions end: the cookie says how long it lives.
#[test]
fn session_cookies_have_an_age_limit() {
    let w = web_alone(&[]);
    let r = send(
        w.addr,
        "POST",
        "/api/login",
        None,
        Some(r#"{"username":"alice"}"#),
    );
    let cookie = r.header("set-cookie").unwrap();
    let age: u64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("no Max-Age in {cookie}"))
        .parse()
        .unwrap();
    assert!((3600..=86_400).contains(&age), "{cookie}");
}

/// With no service running, the health check says Ok only until an order waits: then it names
/// every service that has records waiting and handles none.
#[test]
fn the_health_check_names_services_that_are_not_running() {
    let w = web_alone(&[("PIZZA_TIME_SCALE", "0")]);
    let cookie = login(w.addr, "health");
    place(w.addr, &cookie);
    let start = Instant::now();
    let r = loop {
        let r = send(w.addr, "GET", "/health-check", None, None);
        if r.status != 200 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "still {}", r.body);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r.status, 503, "{}", r.body);
    eprintln!("unhealthy {:?} after the order:\n{}", start.elapsed(), r.body);
    // The services that read pizza-ordered; nothing reached bake.
    for service in ["assemble", "deliver", "merge", "status"] {
        assert!(
            r.body.contains(&format!("{service}: 1 records waiting")),
            "{service} in {}",
            r.body
        );
    }
    assert!(!r.body.contains("bake"), "{}", r.body);
}

/// Issue 15, part 2: two web instances on one broker, each folding its own view in its own data
/// directory, sharing the session key. An order placed through one is shown by it at once, with
/// its details (read your own writes: the answer to the POST waited for its own view), and the
/// other instance shows it too, to the same customer.
#[test]
fn every_web_instance_shows_every_order_and_its_own_at_once() {
    let (_broker, brokers) = broker();
    let dir = tempfile::tempdir().unwrap();
    let key = [("PIZZA_SESSION_KEY", "ab".repeat(32))];
    let env: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_a, a) = web(&brokers, &dir.path().join("a"), &env);
    let (_b, b) = web(&brokers, &dir.path().join("b"), &env);
    let details = |addr: SocketAddr, cookie: &str, id: &str| -> serde_json::Value {
        let r = send(addr, "GET", &format!("/api/orders/{id}"), Some(cookie), None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["order"].clone()
    };
    for n in 0..5 {
        let cookie = login(a, &format!("alice{n}"));
        let (id, cookie) = place(a, &cookie);
        assert!(
            !details(a, &cookie, &id).is_null(),
            "order {n}: the instance that placed it shows it at once"
        );
        let start = Instant::now();
        while details(b, &cookie, &id).is_null() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "order {n}: the other instance never showed it"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The SQLite files and the session key are the installation's secrets: nobody else may read them.
#[cfg(unix)]
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = web_alone(&[]);
    let data = w.dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    for file in ["web-view.db", "session.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// The demo's own data directory (when none is given) is as private as one `pizza serve` makes,
/// and it is gone once the demo has exited.
#[cfg(unix)]
#[test]
fn the_demos_own_data_directory_is_private_and_removed_on_exit() {
    use std::os::unix::fs::PermissionsExt;
    let (child, _addr, banner) = start_demo_with_banner(&["--time-scale", "0"]);
    let demo = Proc(child);
    let data = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("data:"))
        .map(|d| PathBuf::from(d.trim()))
        .unwrap_or_else(|| panic!("no data line in {banner:?}"));
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", data.display());
    demo.sigterm();
    let mut demo = demo;
    let start = Instant::now();
    while demo.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the demo did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!data.exists(), "{} is left behind", data.display());
}

/// `pizza demo` runs every service; its health check says Ok once they run, and not while one of
/// them cannot (here deliver, whose store is not a file).
#[test]
fn the_demo_reports_a_service_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("delivery.db")).unwrap();
    let data = dir.path().to_str().unwrap();
    let (child, addr) = start_demo(&["--time-scale", "0", "--data-dir", data]);
    let _demo = Proc(child);
    let start = Instant::now();
    let r = loop {
        let r = send(addr, "GET", "/health-check", None, None);
        // The other services join their groups within a few seconds; deliver never does.
        if r.status != 200 && r.body.contains("deliver") && !r.body.contains("assemble") {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the health check never singled out deliver: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(r.status, 503);
    assert!(r.body.contains("delivery.db"), "the reason is shown: {}", r.body);
}

/// With every service running, the health check says Ok, as the original's does.
#[test]
fn the_demo_is_healthy_once_its_services_run() {
    let (child, addr) = start_demo(&["--time-scale", "0"]);
    let _demo = Proc(child);
    let start = Instant::now();
    loop {
        let r = send(addr, "GET", "/health-check", None, None);
        if r.status == 200 {
            assert_eq!(r.body, "Ok");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
