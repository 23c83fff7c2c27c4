//! Writes COUNT signed `.seg` files of PAYLOAD_BYTES each into OUT_DIR, signed with the publisher
//! key KEY_FILE (`edged key gen`), for measuring a store or a daemon holding many segments:
//!
//! ```sh
//! cargo run --release -p store --example many_segments -- KEY_FILE OUT_DIR COUNT PAYLOAD_BYTES
//! ```
//!
//! Payloads differ by their index, so every segment has its own id. Files are not fsynced: they
//! are inputs to an import, not a store.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use store::keys::PublisherSecret;
use store::manifest::{Manifest, SignedManifest};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("many_segments: {e}");
        std::process::exit(2);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, out, count, bytes] = args.as_slice() else {
        return Err("usage: many_segments KEY_FILE OUT_DIR COUNT PAYLOAD_BYTES".into());
    };
    let secret = PublisherSecret::load(&PathBuf::from(key))?;
    let out = PathBuf::from(out);
    let count: usize = count.parse()?;
    let bytes: usize = bytes.parse()?;
    std::fs::create_dir_all(&out)?;
    // A minute in the past: a receiver whose clock is slightly behind still accepts them.
    let created =
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())? - 60_000;
    let mut payload = vec![0u8; bytes];
    let mut file_bytes = Vec::with_capacity(bytes + 512);
    for i in 0..count {
        let tag = (i as u64).to_le_bytes();
        for (n, b) in payload.iter_mut().enumerate() {
            *b = tag[n % 8] ^ (n as u8);
        }
        let name = format!("many-{i:07}");
        let m = Manifest::new(
            secret.public(),
            &name,
            created,
            bytes as u64,
            *blake3::hash(&payload).as_bytes(),
        );
        let signed = SignedManifest::sign(m, &secret)?;
        file_bytes.clear();
        store::segfile::write_seg(&mut file_bytes, &signed, payload.as_slice())?;
        std::fs::File::create(out.join(format!("{name}.seg")))?.write_all(&file_bytes)?;
    }
    Ok(())
}
