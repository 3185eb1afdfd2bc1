//! The self-written mutation fuzzer, for machines without AFL++: `mutfuzz TARGET SECONDS
//! [SEED]` mutates the target's kept inputs (`corpus/TARGET` and `regressions/TARGET`; no
//! coverage feedback, so nothing new is kept), catches panics with `catch_unwind`, and writes
//! each crashing input to `out/TARGET/crashes/`. Prints the executions and crashes at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mixatlas::rng::SplitMix64;
use mixatlas_fuzz::{mutate, targets};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(secs)) = (args.next(), args.next()) else {
        eprintln!("usage: mutfuzz TARGET SECONDS [SEED]");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECONDS: an integer");
    let seed: u64 = args
        .next()
        .map_or(1, |s| s.parse().expect("SEED: an integer"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let crashes = root.join("out").join(&target).join("crashes");
    std::fs::create_dir_all(&crashes).expect("creating out/TARGET/crashes");
    let pool = mixatlas_fuzz::targets::seeds(&root, &target);
    let scratch = targets::Scratch::new(&format!("mut-{target}"));
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = SplitMix64::new(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut execs, mut found) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &pool[(rng.next_u64() % pool.len() as u64) as usize];
            let input = mutate::mutate(&target, base, &pool, &mut rng);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                targets::run(&target, &input, &scratch)
            }));
            execs += 1;
            let problem = match r {
                Ok(Ok(())) => continue,
                Ok(Err(m)) => m,
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            };
            found += 1;
            let name = format!("crash-{seed}-{execs}");
            std::fs::write(crashes.join(&name), &input).expect("writing a crash");
            eprintln!("{target}: {name}: {problem}");
        }
    }
    println!("{target}: {execs} executions in {secs} s, {found} crashes");
}
