//! A leak report as a bridge author sees it: a two-phase shutdown that a
//! stuck worker would otherwise hang, with origins recorded.
//!
//! ```text
//! cargo run --example leak_report
//! ```

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tether::{Event, Registry};

fn open_socket(reg: &Registry<String>) -> tether::Handle {
    reg.insert("socket 10.0.0.7:443".to_owned())
        .expect("the registry has room")
}

fn main() {
    let reg: Registry<String> = Registry::builder()
        .capture_backtraces(true) // where each object and each hold came from
        .on_event(|e| {
            if let Event::Misuse { .. } = e {
                eprintln!("event: {e}");
            }
        })
        .build();

    let socket = open_socket(&reg);
    let config = reg.insert("config".to_owned()).expect("room");
    reg.pin(config).expect("home may pin");
    reg.release(config).expect("main holds it"); // the pin keeps it

    // A worker claims the socket and never lets go in time.
    let transfer = reg.transfer(socket).expect("main holds it");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (claimed_tx, claimed_rx) = mpsc::channel::<()>();
    let worker = {
        let reg = reg.clone();
        thread::Builder::new()
            .name("python-worker".into())
            .spawn(move || {
                let h = reg.claim(transfer).expect("claim");
                claimed_tx.send(()).expect("main waits");
                release_rx.recv().ok(); // stuck until told
                reg.release(h).expect("the worker holds it");
            })
            .expect("spawn")
    };
    claimed_rx.recv().expect("the worker claimed");

    // A caller bug, reported through the event hook (Misuse::Error: an Err).
    let _ = reg.release(socket);

    match reg.shutdown(Duration::from_millis(50)) {
        Ok(()) => println!("shut down cleanly"),
        Err(report) => println!("shutdown timed out; still held:\n{report}"),
    }

    release_tx.send(()).expect("the worker waits");
    worker.join().expect("the worker ran");
    reg.unpin(config).expect("pinned");
    match reg.shutdown(Duration::from_secs(5)) {
        Ok(()) => println!("after the worker let go: shut down cleanly"),
        Err(report) => println!("still held:\n{report}"),
    }
}
