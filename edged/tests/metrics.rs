//! The metrics endpoint of a real daemon, over loopback TCP: `GET /metrics` is answered with
//! the exposition; another method on it is 405 (naming GET), another path 404, garbage 400;
//! and after all of that it still serves. Every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Fleet, NodeOptions, http_get};

/// Sends `request` as is to 127.0.0.1:`port`, returns the whole answer (head and body).
fn exchange(port: u16, request: &[u8]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let limit = Some(Duration::from_secs(10));
    s.set_read_timeout(limit).map_err(|e| e.to_string())?;
    s.set_write_timeout(limit).map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn status_line(answer: &str) -> &str {
    answer.split("\r\n").next().unwrap_or("")
}

/// Whether the head of `answer` has header `name` (any case) with value `value`.
fn has_header(answer: &str, name: &str, value: &str) -> bool {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").skip(1).any(|line| {
        line.split_once(':')
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

#[test]
fn the_metrics_endpoint_answers_get_metrics_only() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default().metrics());
    f.start(1);
    let port = f.node(1).metrics_port.unwrap();

    let (code, body) = http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(
        code == 200
            && body.contains("edged_uptime_seconds ")
            && body.contains("edged_node_info{node_id=\"node-1\"")
            && body.ends_with("# EOF\n"),
        || format!("GET /metrics: {code}\n{body}"),
    );

    let post = b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}";
    let answer = exchange(port, post).unwrap_or_else(|e| f.fail(e));
    f.check(
        status_line(&answer) == "HTTP/1.1 405 Method Not Allowed"
            && has_header(&answer, "allow", "GET"),
        || format!("POST /metrics: {answer}"),
    );
    for method in ["PUT", "DELETE", "HEAD"] {
        let request = format!("{method} /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let answer = exchange(port, request.as_bytes()).unwrap_or_else(|e| f.fail(e));
        f.check(
            status_line(&answer) == "HTTP/1.1 405 Method Not Allowed",
            || format!("{method} /metrics: {answer}"),
        );
    }

    for path in ["/", "/metric", "/metrics/x", "/status"] {
        let (code, body) = http_get(port, path).unwrap_or_else(|e| f.fail(e));
        f.check(code == 404, || format!("GET {path}: {code}\n{body}"));
    }

    let answer = exchange(port, b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")
        .unwrap_or_else(|e| f.fail(e));
    f.check(status_line(&answer) == "HTTP/1.1 400 Bad Request", || {
        format!("a malformed header: {answer}")
    });

    // Still serving.
    let (code, body) = http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(
        code == 200 && body.contains("edged_uptime_seconds "),
        || format!("GET /metrics after the refusals: {code}\n{body}"),
    );
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));
}
