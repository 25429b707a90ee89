//! What sled itself costs for one durable refresh-token rotation, without HTTP, JSON or JWTs: the
//! floor under `bench/run.sh`'s rotation figure. One thread, as the store's writer thread.
//!
//!   cargo run --release --example bench_sled_floor [-- RECORDS]   # default 100000 preloaded
//!
//! Prints the cost of the rotation's transaction (2 reads, 6 inserts over 4 trees, values the
//! size of ours), the same writes without a transaction, a flush after a group of 16 rotations
//! (16 chains, as in bench/run.sh), and a bare `fdatasync` of the same directory for comparison.

use std::io::Write;
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

const GROUP: usize = 16;

fn key(n: u64) -> Vec<u8> {
    // 43 characters, like the base64url SHA-256 digests our records are keyed by.
    format!("{:043x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let records: u64 = std::env::args().nth(1).map_or(100_000, |n| n.parse().expect("RECORDS is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .cache_capacity(16 * 1024 * 1024) // the server's default --cache-mb
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let [refresh, grants, grant_tokens, expiry] = ["refresh_tokens", "grants", "grant_tokens", "expiry"]
        .map(|name| db.open_tree(name).expect("a tree"));
    let token = vec![b'r'; 140]; // a refresh-token record as JSON
    let grant = vec![b'g'; 260]; // a grant record as JSON
    for n in 0..records {
        refresh.insert(key(n), token.clone()).expect("insert");
        grants.insert(key(n + records), grant.clone()).expect("insert");
    }
    db.flush().expect("flush");

    let records_tree = db.open_tree("records").expect("a tree");
    for n in 0..records {
        records_tree.insert([&b"R"[..], &key(n)].concat(), token.clone()).expect("insert");
        records_tree.insert([&b"G"[..], &key(n + records)].concat(), grant.clone()).expect("insert");
    }
    db.flush().expect("flush");
    let mut next_batch = 2 * records;
    let mut rotate_batch = || {
        let (old, new, grant_id) =
            (key(next_batch % records), key(next_batch), key(records + next_batch % records));
        next_batch += 1;
        let index = [&b"X"[..], &next_batch.to_be_bytes()[..], &new].concat();
        records_tree.get([&b"R"[..], &old].concat()).expect("get");
        records_tree.get([&b"G"[..], &grant_id].concat()).expect("get");
        let mut batch = sled::Batch::default();
        batch.insert([&b"R"[..], &old].concat(), token.clone());
        batch.insert([&b"R"[..], &new].concat(), token.clone());
        batch.insert(index.as_slice(), &[]);
        batch.insert([&b"T"[..], &grant_id[..], &new].concat(), &next_batch.to_be_bytes());
        batch.insert([&index[..], b"t"].concat(), &[]);
        batch.insert([&b"G"[..], &grant_id].concat(), grant.clone());
        records_tree.apply_batch(batch).expect("batch");
    };

    let mut next = 2 * records;
    let mut rotate = |transactional: bool| {
        let (old, new, grant_id) = (key(next % records), key(next), key(records + next % records));
        next += 1;
        let index = [&next.to_be_bytes()[..], &new].concat();
        if transactional {
            (&refresh, &grants, &grant_tokens, &expiry)
                .transaction(|(refresh, grants, grant_tokens, expiry)| {
                    refresh.get(&old)?;
                    grants.get(&grant_id)?;
                    refresh.insert(old.as_slice(), token.clone())?;
                    refresh.insert(new.as_slice(), token.clone())?;
                    expiry.insert(index.as_slice(), &[])?;
                    grant_tokens.insert([&grant_id[..], &new].concat(), &next.to_be_bytes())?;
                    expiry.insert([&index[..], b"t"].concat(), &[])?;
                    grants.insert(grant_id.as_slice(), grant.clone())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
        } else {
            refresh.get(&old).expect("get");
            grants.get(&grant_id).expect("get");
            refresh.insert(old.as_slice(), token.clone()).expect("insert");
            refresh.insert(new.as_slice(), token.clone()).expect("insert");
            expiry.insert(index.as_slice(), &[]).expect("insert");
            grant_tokens.insert([&grant_id[..], &new].concat(), &next.to_be_bytes()).expect("insert");
            expiry.insert([&index[..], b"t"].concat(), &[]).expect("insert");
            grants.insert(grant_id.as_slice(), grant.clone()).expect("insert");
        }
    };

    let rounds = 400;
    let (mut transaction, mut plain, mut flush, mut batched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..GROUP {
            rotate(true);
        }
        transaction.push(started.elapsed() / GROUP as u32);
        let started = Instant::now();
        db.flush().expect("flush");
        flush.push(started.elapsed());
        let started = Instant::now();
        for _ in 0..GROUP {
            rotate(false);
        }
        plain.push(started.elapsed() / GROUP as u32);
        db.flush().expect("flush");
        let started = Instant::now();
        for _ in 0..GROUP {
            rotate_batch();
        }
        batched.push(started.elapsed() / GROUP as u32);
        db.flush().expect("flush");
    }
    let mut file = std::fs::File::create(dir.path().join("fdatasync")).expect("a file");
    let fdatasync = median(
        (0..rounds)
            .map(|_| {
                let started = Instant::now();
                file.write_all(&[b'x'; 4096]).expect("write");
                file.sync_data().expect("fdatasync");
                started.elapsed()
            })
            .collect(),
    );
    let (transaction, plain, flush, batched) =
        (median(transaction), median(plain), median(flush), median(batched));
    let per_rotation = transaction + flush / GROUP as u32;
    println!(
        "{records} refresh tokens and grants preloaded, --cache-mb 16, medians of {rounds} groups of {GROUP}"
    );
    println!("rotation transaction (2 reads, 6 inserts, 4 trees)  {:>8.1} µs", micros(transaction));
    println!("the same writes without a transaction               {:>8.1} µs", micros(plain));
    println!("the same writes as one batch in one tree            {:>8.1} µs", micros(batched));
    println!("flush after {GROUP} rotations                          {:>8.1} µs", micros(flush));
    println!("4 KiB append + fdatasync, same disk                 {:>8.1} µs", micros(fdatasync));
    println!(
        "durable rotations/s one writer thread can apply     {:>8.0}   (transaction + flush / {GROUP})",
        1.0 / per_rotation.as_secs_f64()
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
