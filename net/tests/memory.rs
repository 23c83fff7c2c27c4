//! INV-20: memory use does not grow with segment size.
//!
//! Peak RSS of one process is only meaningful for that process, so the relay runs in a child
//! process (this test binary re-executed with `NET_MEMORY_CHILD_BYTES` set: it has its own
//! `main`, `harness = false`, so the child is not a test of its own), once with a 128 MiB
//! and once with a 256 MiB segment between two nodes; both nodes live in the child. The peaks
//! must stay below the larger segment and differ by less than one QUIC stream window.

mod common;
#[path = "../../test-support/libtest_args.rs"]
mod libtest_args;

use std::process::Command;
use std::time::Duration;

use common::*;
use libtest_args::HarnessArgs;
use net::SendOutcome;

const CHILD_ENV: &str = "NET_MEMORY_CHILD_BYTES";

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

fn run_child(bytes: u64) -> u64 {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, bytes.to_string())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split("PEAK_RSS_KIB=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak in child output: {stdout}"))
}

const TEST_NAME: &str = "inv_20_peak_memory_does_not_grow_with_segment_size";

fn main() {
    if let Some(bytes) = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        memory_child(bytes);
        return;
    }
    let args = HarnessArgs::parse(std::env::args().skip(1));
    let selected = args.selects(TEST_NAME);
    if args.list {
        // nextest reads this exact form (`NAME: test`, one per line, nothing else on stdout).
        if selected {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    if !selected {
        println!("0 passed, 0 failed");
        return;
    }
    // A failure panics (exit code 101), as a libtest test does.
    inv_20_peak_memory_does_not_grow_with_segment_size();
    println!("test {TEST_NAME} ... ok");
    println!("1 passed, 0 failed");
}

fn inv_20_peak_memory_does_not_grow_with_segment_size() {
    let small = run_child(128 << 20);
    let large = run_child(256 << 20);
    println!(
        "peak RSS: 128 MiB segment {} MiB, 256 MiB segment {} MiB",
        small / 1024,
        large / 1024
    );
    assert!(
        large < 256 * 1024,
        "peak {large} KiB reaches the segment size"
    );
    assert!(
        large.saturating_sub(small) < 32 * 1024,
        "peak grew by {} KiB when the segment doubled",
        large - small
    );
}

/// The child: relays one segment of `bytes` between two nodes and prints its peak RSS.
fn memory_child(bytes: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fleet = Fleet::new();
        let planned = plan(&["a", "b"], 1 << 30);
        let seg = seed(&planned[0].store, 5, bytes);
        let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
            // Production windows and buffers; generous timeouts for a loaded CI machine.
            cfg.stall_timeout_ms = 30_000;
            cfg.response_timeout_ms = 60_000;
        });
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            nodes[0].node.send_segment(&id("b"), seg),
        )
        .await
        .expect("bounded");
        assert_eq!(outcome, SendOutcome::Delivered);
    });
    println!("PEAK_RSS_KIB={}", peak_rss_kib());
}
