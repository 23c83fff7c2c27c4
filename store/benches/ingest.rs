//! Ingest benchmarks of the store. They print figures and never assert timings.
//!
//! `cargo bench -p store --bench ingest` runs `all`: every figure below, sized by the same
//! environment variables as `scripts/bench-store.sh` (which also runs the `dd` and `b3sum`
//! baselines in the same run and prints the summary table against the targets).
//!
//! Subcommands (the script drives them one at a time):
//!
//! ```text
//! all                                  every figure, in-process (RSS in child processes)
//! gen FILE PAYLOAD_BYTES               write a signed .seg file in bounded memory, fsynced
//! big FILE RUNS                        durable ingest of FILE via Store::ingest_reader from a
//!                                      File, a fresh store each run: MB/s (and CPU-s/GiB)
//! profile-big FILE                     one more such ingest through the timing seam (below)
//! whatif-writeback FILE RUNS           `big` through an experimental seam that starts the
//!                                      writeback of every 8 MiB written (not production code:
//!                                      it measures a proposed change to `RealFs`)
//! hash FILE RUNS                       blake3 of FILE in-process, one thread, 64 KiB reads: MB/s
//! small COUNT BYTES WRITERS RUNS [--profile]
//!                                      durable ingest of COUNT segments of BYTES payload from
//!                                      WRITERS threads sharing one store: segments/s
//! prefault DIR MIB                     use and free MIB MiB of page cache (see `prefault`)
//! raw-big FILE MODE                    the big ingest's work without the store, to see where its
//!                                      time goes: copy FILE to a new file and fsync it. MODE is
//!                                      the chunk size (`1m` as dd, `64k` as the store) with
//!                                      `+hash` (blake3 of each chunk) and `+wb` (early
//!                                      writeback, as `whatif-writeback`) and `+skew` (a 175-byte
//!                                      header first, as the store writes), e.g. `64k+hash`
//! raw-small COUNT BYTES WRITERS [--with-redb]
//!                                      baseline: the same file protocol without the store
//!                                      (create tmp, write, fsync, rename into 256 fan-out
//!                                      directories, fsync directory) from WRITERS threads:
//!                                      files/s; `--with-redb` adds one durable one-row commit
//!                                      per file, taken in turn (no group commit)
//! redb-commit COUNT                    baseline: one-row durable redb commits, one thread, with
//!                                      the store's redb settings: commits/s
//! rss FILE                             one ingest of FILE in this fresh process: peak RSS above
//!                                      the idle RSS (VmHWM/VmRSS of /proc/self/status)
//! ```
//!
//! `profile-big` and `--profile` (one extra run) go through a timing wrapper of the store's
//! filesystem seam and of redb's storage backend, and print where the time went (write, fsync,
//! rename, directory fsync, redb commit fsync; the rest is reading, hashing and bookkeeping).
//! The figures themselves always come from runs on the plain `RealFs`.
//!
//! Lines starting with `RESULT ` are for the script: `RESULT key value` (one run) or
//! `RESULT key median=.. min=.. max=.. n=..` (several). MB is 10^6 bytes.

use std::error::Error;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use store::fs::{DirEntry, Fs, FsFile, FsRead, RealFs};
use store::keys::{PublisherSecret, TrustedPublishers};
use store::manifest::{Manifest, SignedManifest};
use store::{IngestOptions, IngestOutcome, Store, StoreConfig};

type Res<T> = Result<T, Box<dyn Error>>;

const MIB: u64 = 1 << 20;
/// Payload generator block: distinct content per block, cheap to produce.
const GEN_BLOCK_BYTES: usize = 64 * 1024;
/// Every segment of the benchmark is signed by this publisher.
const PUBLISHER_SEED: [u8; 32] = [0xB7; 32];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        // `cargo bench` passes `--bench`; a filter after it is not used here.
        .filter(|a| a != "--bench")
        .collect();
    if let Err(e) = run(&args) {
        eprintln!("bench ingest: error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Res<()> {
    let profile = args.iter().any(|a| a == "--profile");
    let pos: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    match pos.as_slice() {
        [] | ["all"] => cmd_all(),
        ["gen", file, payload_bytes] => {
            let len = gen_seg(Path::new(file), payload_bytes.parse()?, 1, "bench-big")?;
            println!("generated {file}: {len} bytes");
            Ok(())
        }
        ["big", file, runs] => {
            let rates = cmd_big(Path::new(file), runs.parse()?)?;
            report("ingest_mbps", "MB/s", &rates);
            Ok(())
        }
        ["profile-big", file] => profile_big(Path::new(file)),
        ["prefault", dir, mib] => prefault(Path::new(dir), mib.parse()?),
        ["raw-big", file, mode] => {
            let r = cmd_raw_big(Path::new(file), mode)?;
            println!(
                "raw copy {mode:<16} copy {:.3} s + fsync {:.3} s = {:.3} s = {:.1} MB/s",
                r.copy.as_secs_f64(),
                r.fsync.as_secs_f64(),
                (r.copy + r.fsync).as_secs_f64(),
                mb_per_s(r.bytes, r.copy + r.fsync)
            );
            println!(
                "RESULT raw_big_{}_mbps {:.3}",
                mode.replace('+', "_"),
                mb_per_s(r.bytes, r.copy + r.fsync)
            );
            Ok(())
        }
        ["whatif-writeback", file, runs] => {
            let rates = cmd_big_with(Path::new(file), runs.parse()?, || Arc::new(WritebackFs))?;
            report("whatif_writeback_mbps", "MB/s", &rates);
            Ok(())
        }
        ["hash", file, runs] => {
            let rates = cmd_hash(Path::new(file), runs.parse()?)?;
            report("blake3_mbps", "MB/s", &rates);
            Ok(())
        }
        ["small", count, bytes, writers, runs] => {
            let (count, bytes, writers) = (count.parse()?, bytes.parse()?, writers.parse()?);
            let rates = cmd_small(count, bytes, writers, runs.parse()?, None)?;
            if !rates.is_empty() {
                report(&format!("small_w{writers}_sps"), "segments/s", &rates);
            }
            if profile {
                let counters = Arc::new(Counters::default());
                cmd_small(count, bytes, writers, 1, Some(counters.clone()))?;
                print_small_profile(&counters, count);
            }
            Ok(())
        }
        ["raw-small", count, bytes, writers] => {
            let (count, bytes, writers) = (count.parse()?, bytes.parse()?, writers.parse()?);
            let with_redb = args.iter().any(|a| a == "--with-redb");
            let (rate, cpu) = cmd_raw_small(count, bytes, writers, with_redb)?;
            let (what, key) = if with_redb {
                (", then its own redb commit", "raw_redb")
            } else {
                ("", "raw")
            };
            println!(
                "raw file protocol ({writers} threads): {count} x (create tmp, write {bytes} B, \
                 fsync, rename, dir fsync{what}) = {rate:.0} files/s [{cpu}]"
            );
            println!("RESULT {key}_small_w{writers}_fps {rate:.3}");
            Ok(())
        }
        ["redb-commit", count] => {
            let (rate, syncs) = cmd_redb_commit(count.parse()?)?;
            println!(
                "redb one-row durable commits: {rate:.0} commits/s ({syncs:.1} fsyncs per commit)"
            );
            println!("RESULT redb_commit_cps {rate:.3}");
            Ok(())
        }
        ["rss", file] => {
            let r = cmd_rss(Path::new(file))?;
            println!(
                "rss: idle {:.1} MiB, peak {:.1} MiB, peak above idle {:.2} MiB \
                 (HWM reset after setup: {})",
                kib_to_mib(r.idle_kib),
                kib_to_mib(r.peak_kib),
                kib_to_mib(r.peak_kib.saturating_sub(r.idle_kib)),
                r.hwm_reset
            );
            println!("RESULT rss_idle_mib {:.2}", kib_to_mib(r.idle_kib));
            println!(
                "RESULT rss_above_idle_mib {:.2}",
                kib_to_mib(r.peak_kib.saturating_sub(r.idle_kib))
            );
            Ok(())
        }
        _ => Err(format!(
            "usage: ingest [all | gen FILE PAYLOAD_BYTES | big FILE RUNS | profile-big FILE | \
             hash FILE RUNS | prefault DIR MIB | raw-big FILE MODE | \
             small COUNT BYTES WRITERS RUNS [--profile] | \
             raw-small COUNT BYTES WRITERS [--with-redb] | redb-commit COUNT | rss FILE]; \
             got {args:?}"
        )
        .into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes (environment, shared with scripts/bench-store.sh)

#[derive(Debug)]
struct Sizes {
    big_mib: u64,
    runs: usize,
    small_count: usize,
    small_bytes: usize,
    small_runs: usize,
    writers: Vec<usize>,
    rss_mib: u64,
    rss_runs: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Res<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        _ => Ok(default),
    }
}

impl Sizes {
    fn from_env() -> Res<Sizes> {
        let quick = env_or("BENCH_QUICK", 0u8)? != 0;
        let writers: String = env_or("BENCH_WRITERS", "1 8".to_owned())?;
        let writers = writers
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<usize>, _>>()?;
        Ok(Sizes {
            big_mib: env_or("BENCH_BIG_MIB", if quick { 64 } else { 1024 })?,
            runs: env_or("BENCH_RUNS", if quick { 3 } else { 5 })?,
            small_count: env_or("BENCH_SMALL_COUNT", if quick { 1000 } else { 10_000 })?,
            small_bytes: env_or("BENCH_SMALL_BYTES", 4096)?,
            small_runs: env_or("BENCH_SMALL_RUNS", 3)?,
            writers,
            rss_mib: env_or("BENCH_RSS_MIB", if quick { 256 } else { 4096 })?,
            rss_runs: env_or("BENCH_RSS_RUNS", if quick { 1 } else { 3 })?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

fn median_min_max(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn report(key: &str, unit: &str, values: &[f64]) {
    let (median, min, max) = median_min_max(values);
    let n = values.len();
    println!("{key}: median {median:.1} {unit} (min {min:.1}, max {max:.1}, runs {n})");
    if n == 1 {
        println!("RESULT {key} {median:.3}");
    } else {
        println!("RESULT {key} median={median:.3} min={min:.3} max={max:.3} n={n}");
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (all threads), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    cpu_split().map(|(user, sys)| user + sys)
}

/// (user, system) CPU seconds of this process (all threads), from /proc/self/stat.
fn cpu_split() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux configuration this project targets.
    Some((utime / 100.0, stime / 100.0))
}

/// "CPU per item" of a timed section, from [`cpu_split`] before and after it.
fn cpu_per_item(before: Option<(f64, f64)>, items: usize) -> String {
    match before.zip(cpu_split()) {
        Some(((u0, s0), (u1, s1))) => {
            let per = |x: f64| x * 1e6 / items.max(1) as f64;
            format!(
                "CPU {:.0} µs user + {:.0} µs kernel per item",
                per(u1 - u0),
                per(s1 - s0)
            )
        }
        None => "CPU unknown".to_owned(),
    }
}

/// User + system CPU seconds of this process's thread named `name` (summed if several).
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        *total.get_or_insert(0.0) += (utime + stime) / 100.0;
    }
    total
}

/// Makes earlier writes and deletions of the benchmark's file system durable, so they do not
/// spill into the next measurement.
fn settle(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = rustix::fs::syncfs(&f);
    }
}

/// Brings `mib` MiB of page cache into use and frees it again (reading a sparse file, then
/// deleting it: no disk writes). On a VM whose balloon reports free pages to the host, memory
/// that was not used for a few seconds costs a host fault per page when the page cache takes it
/// again: a big write after a pause was several times slower here (dd of 1 GiB: 2.4-2.9 s of
/// system time instead of 0.3-0.5 s). Every timed writer (dd and each ingest) starts right after
/// this, so all start from the same state of memory.
fn prefault(dir: &Path, mib: u64) -> Res<()> {
    let path = dir.join("prefault.sparse");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    f.set_len(mib * MIB)?;
    let mut buf = vec![0u8; MIB as usize];
    while f.read(&mut buf)? > 0 {}
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// What [`prefault`] should cover before writing `bytes`: the file and a margin.
fn prefault_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * 11 / 10 + 16
}

fn temp_parent() -> PathBuf {
    match std::env::var_os("BENCH_TMPDIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir(),
    }
}

// ---------------------------------------------------------------------------------------------
// Segments

fn publisher() -> PublisherSecret {
    PublisherSecret::from_seed(PUBLISHER_SEED)
}

fn trusted() -> TrustedPublishers {
    std::iter::once(publisher().public()).collect()
}

/// A deterministic payload of `len` bytes, streamed: a pseudo-random block, stamped with the
/// tag and block number so no two blocks (nor two tags) are alike.
#[derive(Debug)]
struct PayloadGen {
    base: Vec<u8>,
    block: Vec<u8>,
    tag: u64,
    len: u64,
    pos: u64,
}

impl PayloadGen {
    fn new(tag: u64, len: u64) -> Self {
        let mut base = vec![0u8; GEN_BLOCK_BYTES];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for chunk in base.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        PayloadGen {
            block: base.clone(),
            base,
            tag,
            len,
            pos: 0,
        }
    }
}

impl Read for PayloadGen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.len - self.pos;
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let off = (self.pos % GEN_BLOCK_BYTES as u64) as usize;
        if off == 0 {
            let n = self.pos / GEN_BLOCK_BYTES as u64;
            self.block.copy_from_slice(&self.base);
            self.block[..8].copy_from_slice(&self.tag.to_le_bytes());
            self.block[8..16].copy_from_slice(&n.to_le_bytes());
        }
        let n = buf
            .len()
            .min(GEN_BLOCK_BYTES - off)
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn signed_manifest(name: &str, payload_len: u64, hash: [u8; 32]) -> Res<SignedManifest> {
    let secret = publisher();
    let m = Manifest::new(secret.public(), name, now_ms() - 1_000, payload_len, hash);
    Ok(SignedManifest::sign(m, &secret)?)
}

/// Writes a signed `.seg` file of `payload_len` bytes without holding it in memory (one pass to
/// hash the generated payload, one to write it), then fsyncs it. Returns the file length.
fn gen_seg(path: &Path, payload_len: u64, tag: u64, name: &str) -> Res<u64> {
    let mut hasher = blake3::Hasher::new();
    let mut generator = PayloadGen::new(tag, payload_len);
    let mut buf = vec![0u8; GEN_BLOCK_BYTES];
    loop {
        let n = generator.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let signed = signed_manifest(name, payload_len, *hasher.finalize().as_bytes())?;
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(MIB as usize, file);
    let len = store::segfile::write_seg(&mut out, &signed, PayloadGen::new(tag, payload_len))?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(len)
}

/// `.seg` bytes of a small segment, in memory.
fn small_seg(i: usize, payload_bytes: usize) -> Res<Vec<u8>> {
    let mut body = Vec::with_capacity(payload_bytes);
    PayloadGen::new(i as u64 + 1_000, payload_bytes as u64).read_to_end(&mut body)?;
    let signed = signed_manifest(
        &format!("bench-small-{i}"),
        payload_bytes as u64,
        *blake3::hash(&body).as_bytes(),
    )?;
    let mut out = Vec::with_capacity(payload_bytes + 512);
    store::segfile::write_seg(&mut out, &signed, body.as_slice())?;
    Ok(out)
}

fn open_store(dir: &Path, fs: Arc<dyn Fs>) -> Res<Store> {
    let mut cfg = StoreConfig::new(dir, u64::MAX / 4, trusted());
    // The production floor (64 MiB free) stays: statvfs is part of every reservation.
    cfg.clock_skew_ms = 60_000;
    Ok(Store::open(cfg, fs, now_ms())?.0)
}

fn ingest_one<R: Read>(store: &Store, reader: R) -> Res<()> {
    match store.ingest_reader(reader, &IngestOptions::import(), now_ms(), |_, _| Ok(()))? {
        IngestOutcome::Stored(_) => Ok(()),
        other => Err(format!("expected a newly stored segment, got {other:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. One big segment from a file

/// Durable ingests of `file`, each into a fresh store next to it. Returns MB/s per run.
fn cmd_big(file: &Path, runs: usize) -> Res<Vec<f64>> {
    cmd_big_with(file, runs, || Arc::new(RealFs))
}

fn cmd_big_with(file: &Path, runs: usize, fs: impl Fn() -> Arc<dyn Fs>) -> Res<Vec<f64>> {
    let parent = file.parent().unwrap_or(Path::new("."));
    let bytes = std::fs::metadata(file)?.len();
    let mut rates = Vec::with_capacity(runs);
    for run in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("store-big-")
            .tempdir_in(parent)?;
        let store = open_store(dir.path(), fs())?;
        prefault(parent, prefault_mib(bytes))?;
        settle(parent);
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        ingest_one(&store, File::open(file)?)?;
        let took = start.elapsed();
        let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
        store.close();
        drop(store);
        let rate = mb_per_s(bytes, took);
        let gib = bytes as f64 / (1u64 << 30) as f64;
        match cpu {
            Some(cpu) => println!(
                "big run {}: {bytes} bytes in {:.3} s = {rate:.1} MB/s, {:.2} CPU-s/GiB",
                run + 1,
                took.as_secs_f64(),
                cpu / gib
            ),
            None => println!(
                "big run {}: {bytes} bytes in {:.3} s = {rate:.1} MB/s",
                run + 1,
                took.as_secs_f64()
            ),
        }
        rates.push(rate);
        drop(dir);
        settle(parent);
    }
    Ok(rates)
}

/// One more ingest through the timing seam, printing where the time went.
fn profile_big(file: &Path) -> Res<()> {
    let parent = file.parent().unwrap_or(Path::new("."));
    let bytes = std::fs::metadata(file)?.len();
    let dir = tempfile::Builder::new()
        .prefix("store-prof-")
        .tempdir_in(parent)?;
    let counters = Arc::new(Counters::default());
    let store = open_store(dir.path(), Arc::new(TimedFs(counters.clone())))?;
    prefault(parent, prefault_mib(bytes))?;
    counters.reset();
    settle(parent);
    let start = Instant::now();
    ingest_one(&store, File::open(file)?)?;
    let total = start.elapsed();
    counters.freeze();
    store.close();
    drop(store);
    let c = &counters;
    let secs = |op: &OpStat| op.total().as_secs_f64();
    let measured = [&c.create, &c.write, &c.file_sync, &c.rename, &c.dir_sync]
        .iter()
        .map(|op| secs(op))
        .sum::<f64>()
        + secs(&c.redb_sync)
        + secs(&c.redb_write);
    let t = total.as_secs_f64();
    let pct = |s: f64| 100.0 * s / t;
    println!(
        "big profile ({bytes} bytes, {:.3} s, {:.1} MB/s):",
        t,
        mb_per_s(bytes, total)
    );
    println!(
        "  write syscalls     {:>7.3} s {:>5.1}%  ({} calls, into the page cache)",
        secs(&c.write),
        pct(secs(&c.write)),
        c.write.count()
    );
    println!(
        "  file fsync         {:>7.3} s {:>5.1}%  (the whole file's writeback happens here)",
        secs(&c.file_sync),
        pct(secs(&c.file_sync))
    );
    println!(
        "  create+rename+dir fsync {:>7.3} s {:>5.1}%",
        secs(&c.create) + secs(&c.rename) + secs(&c.dir_sync),
        pct(secs(&c.create) + secs(&c.rename) + secs(&c.dir_sync))
    );
    println!(
        "  redb write+fsync   {:>7.3} s {:>5.1}%  ({} fsyncs)",
        secs(&c.redb_write) + secs(&c.redb_sync),
        pct(secs(&c.redb_write) + secs(&c.redb_sync)),
        c.redb_sync.count()
    );
    println!(
        "  rest (read source, blake3, bookkeeping) {:>7.3} s {:>5.1}%",
        t - measured,
        pct(t - measured)
    );
    println!(
        "RESULT big_profile total_s={t:.3} write_s={:.3} fsync_s={:.3} meta_s={:.3} redb_s={:.3} rest_s={:.3}",
        secs(&c.write),
        secs(&c.file_sync),
        secs(&c.create) + secs(&c.rename) + secs(&c.dir_sync),
        secs(&c.redb_write) + secs(&c.redb_sync),
        t - measured
    );
    drop(dir);
    settle(parent);
    Ok(())
}

#[derive(Debug)]
struct RawBig {
    bytes: u64,
    copy: Duration,
    fsync: Duration,
}

/// Copies `file` into a new file next to it in chunks (hashing them and starting writeback
/// early if `mode` says so), then fsyncs it: the ingest's file work without the store.
fn cmd_raw_big(file: &Path, mode: &str) -> Res<RawBig> {
    let mut parts = mode.split('+');
    let chunk = match parts.next() {
        Some("1m") => MIB as usize,
        Some("64k") => 64 * 1024,
        _ => return Err(format!("raw-big: unknown mode {mode:?}").into()),
    };
    let (mut hash, mut writeback, mut skew) = (false, false, false);
    for flag in parts {
        match flag {
            "hash" => hash = true,
            "wb" => writeback = true,
            "skew" => skew = true,
            _ => return Err(format!("raw-big: unknown flag {flag:?} in {mode:?}").into()),
        }
    }
    let parent = file.parent().unwrap_or(Path::new("."));
    let bytes = std::fs::metadata(file)?.len();
    let out = tempfile::Builder::new()
        .prefix("raw-big-")
        .tempfile_in(parent)?
        .into_temp_path();
    prefault(parent, prefault_mib(bytes))?;
    settle(parent);
    let start = Instant::now();
    let mut src = File::open(file)?;
    let mut dst = std::fs::OpenOptions::new().write(true).open(&out)?;
    let mut buf = vec![0u8; chunk];
    let mut hasher = blake3::Hasher::new();
    let (mut pos, mut hinted) = (0u64, 0u64);
    if skew {
        // As the store does: the header first, so every later chunk straddles pages.
        let mut header = vec![0u8; 175];
        src.read_exact(&mut header)?;
        dst.write_all(&header)?;
        pos = header.len() as u64;
    }
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])?;
        if hash {
            hasher.update(&buf[..n]);
        }
        pos += n as u64;
        if writeback && pos >= hinted + WRITEBACK_CHUNK_BYTES {
            let len = std::num::NonZeroU64::new(pos - hinted);
            let _ = rustix::fs::fadvise(&dst, hinted, len, rustix::fs::Advice::DontNeed);
            hinted = pos;
        }
    }
    std::hint::black_box(hasher.finalize());
    let copy = start.elapsed();
    dst.sync_all()?;
    let fsync = start.elapsed() - copy;
    drop(dst);
    out.close()?;
    settle(parent);
    Ok(RawBig { bytes, copy, fsync })
}

/// blake3 of `file` in-process on one thread, read in the store's 64 KiB chunks: the hashing
/// the ingest does, alone.
fn cmd_hash(file: &Path, runs: usize) -> Res<Vec<f64>> {
    let mut rates = Vec::with_capacity(runs);
    let mut buf = vec![0u8; store::limits::STREAM_BUF_BYTES];
    for _ in 0..runs {
        let start = Instant::now();
        let mut f = File::open(file)?;
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        std::hint::black_box(hasher.finalize());
        rates.push(mb_per_s(bytes, start.elapsed()));
    }
    Ok(rates)
}

// ---------------------------------------------------------------------------------------------
// 2. Many small segments, one shared store, several writer threads

/// Ingests `count` small segments from `writers` threads, a fresh store per run. Returns
/// segments/s per run. With `counters`, runs through the timing seam.
fn cmd_small(
    count: usize,
    payload_bytes: usize,
    writers: usize,
    runs: usize,
    counters: Option<Arc<Counters>>,
) -> Res<Vec<f64>> {
    if writers == 0 || count == 0 {
        return Err("small: COUNT and WRITERS must be > 0".into());
    }
    let segs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..count)
            .map(|i| small_seg(i, payload_bytes))
            .collect::<Res<_>>()?,
    );
    let parent = temp_parent();
    let mut rates = Vec::with_capacity(runs);
    for run in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("edged-bench-small-")
            .tempdir_in(&parent)?;
        let fs: Arc<dyn Fs> = match &counters {
            Some(c) => Arc::new(TimedFs(c.clone())),
            None => Arc::new(RealFs),
        };
        let store = open_store(dir.path(), fs)?;
        if let Some(c) = &counters {
            c.reset();
            c.writers.store(writers, Ordering::Relaxed);
        }
        settle(dir.path());
        let next = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(writers + 1));
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                let (store, segs, next, barrier) =
                    (store.clone(), segs.clone(), next.clone(), barrier.clone());
                let counters = counters.clone();
                std::thread::spawn(move || -> Result<(), String> {
                    barrier.wait();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(seg) = segs.get(i) else {
                            return Ok(());
                        };
                        let start = Instant::now();
                        match &counters {
                            None => ingest_one(&store, seg.as_slice()),
                            Some(c) => ingest_phased(&store, seg, c),
                        }
                        .map_err(|e| e.to_string())?;
                        if let Some(c) = &counters {
                            c.ingest.add(start.elapsed());
                        }
                    }
                })
            })
            .collect();
        let committer_cpu0 = thread_cpu_seconds("store-committer").unwrap_or(f64::NAN);
        barrier.wait();
        let cpu0 = cpu_split();
        let start = Instant::now();
        let mut failure = None;
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("writer thread panicked".to_owned()),
            }
        }
        let took = start.elapsed();
        if let Some(c) = &counters {
            let cpu = thread_cpu_seconds("store-committer").unwrap_or(f64::NAN) - committer_cpu0;
            c.committer_cpu_us
                .store((cpu * 1e6) as u64, Ordering::Relaxed);
            c.freeze();
            c.wall_nanos
                .store(took.as_nanos() as u64, Ordering::Relaxed);
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        store.close();
        drop(store);
        let cpu = cpu_per_item(cpu0, count);
        let rate = count as f64 / took.as_secs_f64();
        println!(
            "small run {} ({writers} writers{}): {count} x {payload_bytes} B in {:.3} s = \
             {rate:.0} segments/s [{cpu}]",
            run + 1,
            if counters.is_some() { ", profiled" } else { "" },
            took.as_secs_f64()
        );
        rates.push(rate);
        drop(dir);
        settle(&parent);
    }
    Ok(rates)
}

/// The store's file protocol for one small file, without the store: what one ingest costs in
/// file operations alone. Returns files/s over `writers` threads.
fn cmd_raw_small(
    count: usize,
    payload_bytes: usize,
    writers: usize,
    with_redb: bool,
) -> Res<(f64, String)> {
    const TABLE: redb::TableDefinition<&[u8; 32], &[u8]> = redb::TableDefinition::new("bench");
    if writers == 0 || count == 0 {
        return Err("raw-small: COUNT and WRITERS must be > 0".into());
    }
    let parent = temp_parent();
    let dir = tempfile::Builder::new()
        .prefix("edged-bench-raw-")
        .tempdir_in(&parent)?;
    let root = dir.path().to_owned();
    std::fs::create_dir_all(root.join("tmp"))?;
    for b in 0..=255u8 {
        std::fs::create_dir_all(root.join(format!("segments/{b:02x}")))?;
    }
    let db = if with_redb {
        Some(Arc::new(
            RealFs.open_database(&root.join("bench.redb"), true)?,
        ))
    } else {
        None
    };
    settle(&root);
    // The header a real segment carries is about 200 bytes.
    let body = Arc::new(vec![0x5Au8; payload_bytes + 200]);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (root, body, next, barrier) =
                (root.clone(), body.clone(), next.clone(), barrier.clone());
            let db = db.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let io = |e: io::Error| e.to_string();
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(());
                    }
                    let id = *blake3::hash(&(i as u64).to_le_bytes()).as_bytes();
                    let name = hex::encode(id);
                    let tmp = root.join("tmp").join(format!("{name}.part"));
                    let fanout = root.join("segments").join(&name[..2]);
                    let mut f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .map_err(io)?;
                    f.write_all(&body).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    drop(f);
                    std::fs::rename(&tmp, fanout.join(format!("{name}.seg"))).map_err(io)?;
                    File::open(&fanout).and_then(|d| d.sync_all()).map_err(io)?;
                    if let Some(db) = &db {
                        // One durable commit per file, in turn: no group commit.
                        let commit = || -> Result<(), redb::Error> {
                            let txn = db.begin_write()?;
                            txn.open_table(TABLE)?.insert(&id, &body[..200])?;
                            txn.commit()?;
                            Ok(())
                        };
                        commit().map_err(|e| e.to_string())?;
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let cpu0 = cpu_split();
    let start = Instant::now();
    for t in threads {
        t.join().map_err(|_| "raw writer panicked")??;
    }
    let took = start.elapsed();
    let cpu = cpu_per_item(cpu0, count);
    drop(db);
    drop(dir);
    settle(&parent);
    Ok((count as f64 / took.as_secs_f64(), cpu))
}

/// One-row durable redb commits on one thread, with the store's redb settings. Returns
/// commits/s and fsyncs per commit.
fn cmd_redb_commit(count: usize) -> Res<(f64, f64)> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let parent = temp_parent();
    let dir = tempfile::Builder::new()
        .prefix("edged-bench-redb-")
        .tempdir_in(&parent)?;
    let counters = Arc::new(Counters::default());
    let db = TimedFs(counters.clone()).open_database(&dir.path().join("bench.redb"), true)?;
    let row = [0xA5u8; 200];
    counters.reset();
    settle(dir.path());
    let start = Instant::now();
    for i in 0..count as u64 {
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?.insert(i, row.as_slice())?;
        txn.commit()?;
    }
    let took = start.elapsed();
    drop(db);
    drop(dir);
    settle(&parent);
    Ok((
        count as f64 / took.as_secs_f64(),
        counters.redb_sync.count() as f64 / count.max(1) as f64,
    ))
}

/// What `ingest_reader` does, step by step, timing the steps: `begin_ingest` (signature,
/// index lookups, reservation, temp file creation), the payload write, and `finish` (hash check,
/// fsync, rename, directory fsync, commit through the committer).
fn ingest_phased(store: &Store, seg: &[u8], c: &Counters) -> Res<()> {
    let mut reader = seg;
    let signed = store::segfile::read_header(&mut reader)?;
    let t = Instant::now();
    let begun = store.begin_ingest(signed, &IngestOptions::import(), now_ms())?;
    c.begin.add(t.elapsed());
    let store::Begin::Ingest(mut ingest) = begun else {
        return Err("expected a new segment".into());
    };
    ingest.write(reader)?;
    let t = Instant::now();
    ingest.finish(now_ms(), |_, _| Ok(()))?;
    c.finish.add(t.elapsed());
    Ok(())
}

/// Mean cost of verifying one manifest signature (ed25519, strict), on this thread.
fn verify_cost() -> Res<Duration> {
    let signed = signed_manifest("bench-verify", 4096, [7; 32])?;
    let trusted = trusted();
    let n = 200u32;
    let start = Instant::now();
    for _ in 0..n {
        signed.verify(&trusted, now_ms(), 60_000)?;
    }
    Ok(start.elapsed() / n)
}

fn print_small_profile(c: &Counters, count: usize) {
    let per = |op: &OpStat| {
        let n = op.count().max(1);
        op.total().as_secs_f64() * 1e6 / n as f64
    };
    let wall = Duration::from_nanos(c.wall_nanos.load(Ordering::Relaxed)).as_secs_f64();
    let commits = c.redb_sync.count();
    let commit_wait = per(&c.finish) - per(&c.file_sync) - per(&c.rename) - per(&c.dir_sync);
    println!(
        "small profile: mean per segment (µs; {} writer threads overlap): ingest {:.0} = \
         begin {:.0} (of which create temp file {:.0}; one signature check alone costs {:.0}) + \
         write {:.0} + finish {:.0} (file fsync {:.0} + rename {:.0} + dir fsync {:.0} + \
         commit wait {:.0}) + rest {:.0}",
        c.writers.load(Ordering::Relaxed),
        per(&c.ingest),
        per(&c.begin),
        per(&c.create),
        verify_cost()
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(f64::NAN),
        per(&c.write) * c.write.count() as f64 / count.max(1) as f64,
        per(&c.finish),
        per(&c.file_sync),
        per(&c.rename),
        per(&c.dir_sync),
        commit_wait,
        per(&c.ingest) - per(&c.begin) - per(&c.finish),
    );
    println!(
        "small profile: redb {} fsyncs ({:.1} segments per commit), mean fsync {:.0} µs; \
         committer thread: {:.0}% of the wall time in redb I/O, {:.0}% on a CPU; \
         file fsyncs {}, dir fsyncs {}",
        commits,
        count as f64 / commits.max(1) as f64,
        per(&c.redb_sync),
        100.0 * (c.redb_sync.total() + c.redb_write.total()).as_secs_f64() / wall,
        100.0 * c.committer_cpu_us.load(Ordering::Relaxed) as f64 / 1e6 / wall,
        c.file_sync.count(),
        c.dir_sync.count(),
    );
    println!(
        "RESULT small_profile ingest_us={:.0} file_fsync_us={:.0} dir_fsync_us={:.0} \
         redb_fsync_us={:.0} segs_per_redb_fsync={:.1}",
        per(&c.ingest),
        per(&c.file_sync),
        per(&c.dir_sync),
        per(&c.redb_sync),
        count as f64 / commits.max(1) as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Peak RSS

#[derive(Debug)]
struct RssReport {
    idle_kib: u64,
    peak_kib: u64,
    hwm_reset: bool,
}

fn proc_status_kib(field: &str) -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status").into())
}

/// One durable ingest of `file` in this process (meant to be fresh): the RSS once the store is
/// open and the file is open (idle), and the high-water mark during the ingest.
fn cmd_rss(file: &Path) -> Res<RssReport> {
    let parent = file.parent().unwrap_or(Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix("store-rss-")
        .tempdir_in(parent)?;
    let store = open_store(dir.path(), Arc::new(RealFs))?;
    let source = File::open(file)?;
    settle(parent);
    let idle_kib = proc_status_kib("VmRSS:")?;
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so setup cannot
    // count as the ingest's peak; without it the figure can only be an over-estimate.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    ingest_one(&store, source)?;
    let peak_kib = proc_status_kib("VmHWM:")?;
    store.close();
    drop(store);
    drop(dir);
    settle(parent);
    Ok(RssReport {
        idle_kib,
        peak_kib: peak_kib.max(idle_kib),
        hwm_reset,
    })
}

// ---------------------------------------------------------------------------------------------
// `all`: what `cargo bench` runs

fn cmd_all() -> Res<()> {
    let sizes = Sizes::from_env()?;
    println!("bench ingest (cargo bench): {sizes:?}");
    println!(
        "note: figures are noisy on a shared machine; scripts/bench-store.sh adds dd/b3sum \
         baselines and the summary against targets"
    );
    let tmp = tempfile::Builder::new()
        .prefix("edged-bench-")
        .tempdir_in(temp_parent())?;

    let big = tmp.path().join("big.seg");
    gen_seg(&big, sizes.big_mib * MIB, 1, "bench-big")?;
    let mut ingest = Vec::new();
    let mut hash = Vec::new();
    for _ in 0..sizes.runs {
        hash.extend(cmd_hash(&big, 1)?);
        ingest.extend(cmd_big(&big, 1)?);
    }
    report("blake3_mbps", "MB/s", &hash);
    report("ingest_mbps", "MB/s", &ingest);
    profile_big(&big)?;
    std::fs::remove_file(&big)?;

    for &w in &sizes.writers {
        let rates = cmd_small(
            sizes.small_count,
            sizes.small_bytes,
            w,
            sizes.small_runs,
            None,
        )?;
        report(&format!("small_w{w}_sps"), "segments/s", &rates);
        let counters = Arc::new(Counters::default());
        cmd_small(
            sizes.small_count,
            sizes.small_bytes,
            w,
            1,
            Some(counters.clone()),
        )?;
        print_small_profile(&counters, sizes.small_count);
    }

    let rss_file = tmp.path().join("rss.seg");
    gen_seg(&rss_file, sizes.rss_mib * MIB, 2, "bench-rss")?;
    let exe = std::env::current_exe()?;
    let mut above = Vec::new();
    for _ in 0..sizes.rss_runs {
        // A fresh process per run: its high-water mark starts clean.
        let out = std::process::Command::new(&exe)
            .arg("rss")
            .arg(&rss_file)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        if !out.status.success() {
            return Err(format!("rss run failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let v = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT rss_above_idle_mib "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or("rss run printed no figure")?;
        above.push(v);
    }
    report("rss_above_idle_mib", "MiB", &above);
    std::fs::remove_file(&rss_file)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timing seam: the real file system and redb's file backend, with time per operation

#[derive(Debug, Default)]
struct OpStat {
    count: AtomicU64,
    nanos: AtomicU64,
    frozen: AtomicBool,
}

impl OpStat {
    fn add(&self, d: Duration) {
        if self.frozen.load(Ordering::Relaxed) {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
    fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.nanos.store(0, Ordering::Relaxed);
        self.frozen.store(false, Ordering::Relaxed);
    }
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.add(start.elapsed());
        out
    }
}

#[derive(Debug, Default)]
struct Counters {
    create: OpStat,
    write: OpStat,
    file_sync: OpStat,
    rename: OpStat,
    dir_sync: OpStat,
    redb_write: OpStat,
    redb_sync: OpStat,
    ingest: OpStat,
    begin: OpStat,
    finish: OpStat,
    wall_nanos: AtomicU64,
    writers: AtomicUsize,
    committer_cpu_us: AtomicU64,
}

impl Counters {
    fn ops(&self) -> [&OpStat; 10] {
        [
            &self.create,
            &self.write,
            &self.file_sync,
            &self.rename,
            &self.dir_sync,
            &self.redb_write,
            &self.redb_sync,
            &self.ingest,
            &self.begin,
            &self.finish,
        ]
    }
    fn reset(&self) {
        self.ops().iter().for_each(|op| op.reset());
    }
    /// Stops counting: what closing the store does afterwards is not part of the measurement.
    fn freeze(&self) {
        for op in self.ops() {
            op.frozen.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct TimedFs(Arc<Counters>);

#[derive(Debug)]
struct TimedFile {
    inner: Box<dyn FsFile>,
    counters: Arc<Counters>,
}

impl Read for TimedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for TimedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let counters = self.counters.clone();
        counters.write.time(|| self.inner.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for TimedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl FsFile for TimedFile {
    fn sync(&mut self) -> io::Result<()> {
        let counters = self.counters.clone();
        counters.file_sync.time(|| self.inner.sync())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Fs for TimedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inner = self.0.create.time(|| RealFs.create_new(path))?;
        Ok(Box::new(TimedFile {
            inner,
            counters: self.0.clone(),
        }))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inner = RealFs.open_rw(path)?;
        Ok(Box::new(TimedFile {
            inner,
            counters: self.0.clone(),
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        RealFs.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename.time(|| RealFs.rename(from, to))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.dir_sync.time(|| RealFs.sync_dir(dir))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        RealFs.list_dir(dir)
    }
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        RealFs.file_len(path)
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        RealFs.available_bytes(dir)
    }
    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let backend = TimedBackend {
            inner: FileBackend::new(file)?,
            counters: self.0.clone(),
        };
        // The store's own redb settings (cache size, integrity check), over a timed backend.
        store::fs::database_builder().create_with_backend(backend)
    }
}

/// redb's file backend, timing its writes and syncs (one durable commit = its fsyncs).
#[derive(Debug)]
struct TimedBackend {
    inner: FileBackend,
    counters: Arc<Counters>,
}

impl StorageBackend for TimedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.counters.redb_sync.time(|| self.inner.sync_data())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.counters
            .redb_write
            .time(|| self.inner.write(offset, data))
    }
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

// ---------------------------------------------------------------------------------------------
// What-if seam: RealFs, plus an early start of the writeback of what was written

/// Bytes after which the written range is handed to the kernel's writeback.
const WRITEBACK_CHUNK_BYTES: u64 = 8 << 20;

/// `RealFs` whose files start the writeback of every [`WRITEBACK_CHUNK_BYTES`] written
/// (`posix_fadvise(DONTNEED)` on dirty pages queues them for writeback without waiting), so the
/// disk writes while the ingest thread still reads and hashes, and the final fsync only waits for
/// the tail. Durability is unchanged: nothing counts as durable before that fsync.
#[derive(Debug, Default)]
struct WritebackFs;

#[derive(Debug)]
struct WritebackFile {
    file: File,
    pos: u64,
    hinted: u64,
}

impl Read for WritebackFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        if self.pos >= self.hinted + WRITEBACK_CHUNK_BYTES {
            let len = std::num::NonZeroU64::new(self.pos - self.hinted);
            // Only a hint: a failure changes nothing the final fsync does not check.
            let _ = rustix::fs::fadvise(&self.file, self.hinted, len, rustix::fs::Advice::DontNeed);
            self.hinted = self.pos;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for WritebackFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(pos)?;
        self.hinted = self.hinted.min(self.pos);
        Ok(self.pos)
    }
}

impl FsFile for WritebackFile {
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Fs for WritebackFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(WritebackFile {
            file,
            pos: 0,
            hinted: 0,
        }))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Box::new(WritebackFile {
            file,
            pos: 0,
            hinted: 0,
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        RealFs.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        RealFs.list_dir(dir)
    }
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        RealFs.file_len(path)
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        RealFs.available_bytes(dir)
    }
    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        RealFs.open_database(path, create)
    }
}
