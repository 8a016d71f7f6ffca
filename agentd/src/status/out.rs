//! The one output buffer every rendering of `status` writes into ([`Out`]), and the escaping
//! of JSON strings and Prometheus labels.

use lbfo_core::addr::Ip;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The one output buffer of every view. For the router size budget each kind of piece (text,
/// number, padded cell, JSON string, ...) is written by one out-of-line method, so the views are
/// chains of calls instead of a `format!` and a temporary `String` per field.
#[derive(Debug, Default)]
pub(super) struct Out(pub(super) String);

impl Out {
    /// Text as it is.
    #[inline(never)]
    pub(super) fn s(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// A comma before every item but the first.
    pub(super) fn sep(&mut self, i: usize) -> &mut Self {
        self.s(if i > 0 { "," } else { "" })
    }

    /// A number.
    #[inline(never)]
    pub(super) fn n(&mut self, n: u64) -> &mut Self {
        let _ = write!(self.0, "{n}");
        self
    }

    /// `true` or `false`.
    pub(super) fn b(&mut self, v: bool) -> &mut Self {
        self.s(if v { "true" } else { "false" })
    }

    /// A number or `null`.
    pub(super) fn opt(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.n(v),
            None => self.s("null"),
        }
    }

    /// Text left-aligned in `w` columns (characters, as `{:<w$}` counts them).
    #[inline(never)]
    pub(super) fn l(&mut self, s: &str, w: usize) -> &mut Self {
        let _ = write!(self.0, "{s:<w$}");
        self
    }

    /// A number right-aligned in `w` columns, `-` for none.
    #[inline(never)]
    pub(super) fn r(&mut self, v: Option<u64>, w: usize) -> &mut Self {
        let _ = match v {
            Some(n) => write!(self.0, "{n:>w$}"),
            None => write!(self.0, "{:>w$}", "-"),
        };
        self
    }

    /// An address, left-aligned in `w` columns (0: as it is).
    #[inline(never)]
    pub(super) fn addr(&mut self, a: &IpAddr, w: usize) -> &mut Self {
        let _ = write!(self.0, "{:<w$}", Ip(*a));
        self
    }

    /// Microseconds as milliseconds with three decimals, right-aligned in `w` columns, `-` for
    /// none: a round-trip time.
    #[inline(never)]
    pub(super) fn ms3(&mut self, us: Option<u32>, w: usize) -> &mut Self {
        let _ = match us {
            Some(us) => write!(self.0, "{:>w$}", format!("{}.{:03}", us / 1000, us % 1000)),
            None => write!(self.0, "{:>w$}", "-"),
        };
        self
    }

    /// Sixteen lower-case hex digits.
    #[inline(never)]
    pub(super) fn hex(&mut self, v: u64) -> &mut Self {
        let _ = write!(self.0, "{v:016x}");
        self
    }

    /// Milliseconds as seconds with one decimal: `1.2 s`.
    #[inline(never)]
    pub(super) fn secs(&mut self, ms: u64) -> &mut Self {
        // The remainder in 32 bits: 64-bit division is a library call on the routers.
        let tenths = (ms % 1000) as u32 / 100;
        self.n(ms / 1000).s(".").n(tenths.into()).s(" s")
    }

    /// A JSON string literal.
    pub(super) fn q(&mut self, s: &str) -> &mut Self {
        self.s("\"").escaped(s, Escape::Json).s("\"")
    }

    /// A Prometheus label value (`\\`, `"`, newline escaped) or HELP text (`\\`, newline).
    pub(super) fn esc(&mut self, s: &str, label: bool) -> &mut Self {
        self.escaped(s, if label { Escape::Label } else { Escape::Help })
    }

    /// `s` escaped for `how`: one routine for JSON and Prometheus, byte by byte (every byte it
    /// replaces is ASCII, so the runs between them are whole characters), for the router size
    /// budget.
    #[inline(never)]
    pub(super) fn escaped(&mut self, s: &str, how: Escape) -> &mut Self {
        let json = how == Escape::Json;
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            let by = match b {
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'"' if how != Escape::Help => "\\\"",
                b'\r' if json => "\\r",
                b'\t' if json => "\\t",
                // The other control characters, as \u00XX.
                0..0x20 if json => "",
                _ => continue,
            };
            self.s(s.get(from..i).unwrap_or_default());
            if by.is_empty() {
                self.s("\\u00")
                    .hex_digit(u32::from(b) >> 4)
                    .hex_digit(b.into());
            } else {
                self.s(by);
            }
            from = i + 1;
        }
        self.s(s.get(from..).unwrap_or_default())
    }

    pub(super) fn hex_digit(&mut self, v: u32) -> &mut Self {
        self.0
            .push(char::from(b"0123456789abcdef"[v as usize & 15]));
        self
    }
}

/// What [`Out::escaped`] escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    /// A JSON string: `"`, `\\`, control characters.
    Json,
    /// A Prometheus label value: `\\`, `"`, newline.
    Label,
    /// Prometheus HELP text: `\\`, newline.
    Help,
}

/// An address as text.
pub(super) fn addr_string(a: &IpAddr) -> String {
    let mut o = Out::default();
    o.addr(a, 0);
    o.0
}

/// [`Out::esc`] as a string, for the tests.
#[cfg(test)]
pub(super) fn escape(s: &str, label: bool) -> String {
    let mut o = Out::default();
    o.esc(s, label);
    o.0
}

/// [`Out::q`] as a string, for the tests.
#[cfg(test)]
pub(super) fn quote(s: &str) -> String {
    let mut o = Out::default();
    o.q(s);
    o.0
}
