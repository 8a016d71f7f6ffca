//! `lbfo-listen ADDR:PORT`: a minimal TCP service for the health-check tests and benchmark —
//! accepts connections and closes them, until killed. Prints "listening" once bound.

use std::io::Write;
use std::net::TcpListener;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: lbfo-listen ADDR:PORT");
        std::process::exit(2);
    };
    let l = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lbfo-listen: {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(std::io::stdout(), "listening");
    let _ = std::io::stdout().flush();
    for conn in l.incoming() {
        drop(conn);
    }
}
