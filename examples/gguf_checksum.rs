//! Times the per-tensor checksum check that every quantized load runs
//! (`huatuo::model::store::gguf::verify_file`, the same code as the load's check) on a synthetic
//! cache file of the 7B's size class: `cargo run --release --example gguf_checksum -- 4`
//! writes a 4 GB GGUF (100 f32 tensors of 40 MB, like the 7B's largest matrices in q8_0)
//! to a temp dir, checks it twice (the page cache is warm both times, as it is after a
//! conversion or for a model loaded before) and prints the rate; the file is deleted.
use std::io::Write;
use std::time::Instant;

const COLS: usize = 1024;
const ROWS: usize = 10 * 1024; // 40 MB of f32 per tensor
const ALIGNMENT: usize = 32;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn main() -> std::io::Result<()> {
    let gb: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4.0);
    let tensor_bytes = ROWS * COLS * 4;
    let count = ((gb * 1e9) / tensor_bytes as f64).ceil() as usize;
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| ".".into()))?;
    let path = dir.path().join("synthetic.q8_0.gguf");

    // One tensor's bytes (xorshift noise), reused for every tensor: same checksum work.
    let mut data = vec![0u8; tensor_bytes];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let sum = huatuo::model::store::gguf::checksum(&data);

    let mut header = Vec::new();
    header.extend_from_slice(&0x4655_4747u32.to_le_bytes());
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(count as u64).to_le_bytes());
    header.extend_from_slice(&2u64.to_le_bytes());
    string(&mut header, "huatuo.format");
    header.extend_from_slice(&4u32.to_le_bytes());
    header.extend_from_slice(&huatuo::model::store::gguf::FORMAT_VERSION.to_le_bytes());
    string(&mut header, "huatuo.checksums");
    header.extend_from_slice(&9u32.to_le_bytes());
    header.extend_from_slice(&10u32.to_le_bytes());
    header.extend_from_slice(&(count as u64).to_le_bytes());
    for _ in 0..count {
        header.extend_from_slice(&sum.to_le_bytes());
    }
    for i in 0..count {
        string(&mut header, &format!("t{i}.weight"));
        header.extend_from_slice(&2u32.to_le_bytes());
        header.extend_from_slice(&(COLS as u64).to_le_bytes());
        header.extend_from_slice(&(ROWS as u64).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes()); // f32
        header.extend_from_slice(&((i * tensor_bytes) as u64).to_le_bytes());
    }
    header.resize(header.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);

    let started = Instant::now();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    file.write_all(&header)?;
    for _ in 0..count {
        file.write_all(&data)?;
    }
    file.into_inner()?.sync_all()?;
    let total = (count * tensor_bytes) as f64;
    println!(
        "wrote {:.2} GB ({count} tensors) in {:.1} s",
        total / 1e9,
        started.elapsed().as_secs_f64()
    );
    for run in 1..=2 {
        let started = Instant::now();
        let result = huatuo::model::store::gguf::verify_file(&path);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "check {run}: {result:?} in {secs:.3} s, {:.2} GB/s; {:.2} s for the 7B's 8.1 GB of q8_0",
            total / secs / 1e9,
            8.1e9 / (total / secs)
        );
    }
    Ok(())
}
