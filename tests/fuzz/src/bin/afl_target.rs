//! The AFL++ entry point (`cargo afl build`): `afl_target TARGET` reads inputs in persistent
//! mode and runs the named target on each (see `targets::TARGETS`). A panic aborts, which
//! AFL records as a crash; so does a broken invariant, with its message.

use mixatlas_fuzz::targets::{self, Scratch};

fn main() {
    let target = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: afl_target TARGET ({:?})", targets::TARGETS);
        std::process::exit(2);
    });
    let scratch = Scratch::new(&target);
    afl::fuzz!(|data: &[u8]| {
        if let Err(m) = targets::run(&target, data, &scratch) {
            panic!("{target}: {m}");
        }
    });
}
