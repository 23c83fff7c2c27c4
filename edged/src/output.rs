//! Output for humans: tables, sizes, and the one escaping function every shown name goes through.
//!
//! # Escaping
//!
//! Names come from parties this node does not trust to behave: file names on a stick, segment
//! names chosen by a publisher, paths and reasons that quote them, strings a local client sent.
//! Printed raw, an escape sequence could erase the line above, a newline could forge a row, and a
//! bidi control (U+202E) could reverse what an operator reads. [`escape`] renders every such
//! character visibly instead:
//!
//! | characters | shown as |
//! |---|---|
//! | `\n`, `\r`, `\t` | `\n`, `\r`, `\t` |
//! | other C0 controls (U+0000–U+001F) and DEL (U+007F) | `\x1b`, `\x7f`, … |
//! | C1 controls (U+0080–U+009F) | `\u{9b}`, … |
//! | bidi controls U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069 | `\u{202e}`, … |
//! | line and paragraph separators U+2028, U+2029 | `\u{2028}`, `\u{2029}` |
//!
//! Everything else, including a backslash, is shown as it is. [`table`] escapes every cell; the
//! commands escape every other line that shows a name, file name or path, and `main` escapes the
//! error it prints.
//!
//! JSON output (`--json`) is not escaped, so that it stays lossless: the JSON encoder writes
//! control characters as `\uXXXX`, so JSON cannot drive a terminal, but bidi controls and the
//! separators are ordinary characters to JSON and are kept as they are. A tool that shows JSON
//! fields to people must escape them itself.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `s` with every control, bidi control and line separator rendered visibly (see the module
/// docs); borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Writing into a String cannot fail.
        '\u{0}'..='\u{1f}' | '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Displays a string through [`escape`], for `format!` and log fields.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// A path for a line shown to people: lossy UTF-8, escaped.
pub fn path(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

/// Renders rows under a header, each column as wide as its widest cell. Every cell is escaped
/// ([`escape`]): a cell cannot break its row or drive the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<Cow<'_, str>> = header.iter().map(|h| escape(h)).collect();
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[Cow<'_, str>]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&header);
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// A table printed page by page, as a listing arrives: the header goes out with the first page,
/// columns take the widths of the header and the first page's cells, and only grow after that
/// (a wider cell in a later page widens the rows from its own on). Every cell is escaped, as in
/// [`table`].
#[derive(Debug)]
pub struct TableStream {
    header: Vec<String>,
    widths: Vec<usize>,
    started: bool,
}

impl TableStream {
    pub fn new(header: &[&str]) -> TableStream {
        let header: Vec<String> = header.iter().map(|h| escape(h).into_owned()).collect();
        let widths = header.iter().map(|h| h.chars().count()).collect();
        TableStream {
            header,
            widths,
            started: false,
        }
    }

    /// The lines of one page of rows (the header first, on the first call).
    pub fn page(&mut self, rows: &[Vec<String>]) -> String {
        let rows: Vec<Vec<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.iter().map(|cell| escape(cell)).collect())
            .collect();
        let mut out = String::new();
        if !self.started {
            self.started = true;
            self.widen(&rows);
            let header: Vec<Cow<'_, str>> = self
                .header
                .iter()
                .map(|h| Cow::Borrowed(h.as_str()))
                .collect();
            out.push_str(&self.line(&header));
            out.push('\n');
        }
        for row in &rows {
            self.widen(std::slice::from_ref(row));
            out.push_str(&self.line(row));
            out.push('\n');
        }
        out
    }

    /// The header alone, if no page came (an empty listing).
    pub fn finish(&mut self) -> String {
        if self.started {
            return String::new();
        }
        self.page(&[])
    }

    fn widen(&mut self, rows: &[Vec<Cow<'_, str>>]) {
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = self.widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
    }

    fn line(&self, cells: &[Cow<'_, str>]) -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let width = self.widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    }
}

/// One JSON array written item by item as a listing arrives, byte for byte what
/// `serde_json::to_string_pretty` gives for the whole array (`[]` when empty), so `--json`
/// output stays one valid array while memory holds one item.
#[derive(Debug)]
pub struct JsonArray<W: std::io::Write> {
    out: W,
    items: u64,
}

impl<W: std::io::Write> JsonArray<W> {
    pub fn new(out: W) -> JsonArray<W> {
        JsonArray { out, items: 0 }
    }

    pub fn item<T: serde::Serialize>(&mut self, item: &T) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(item).map_err(std::io::Error::other)?;
        self.out
            .write_all(if self.items == 0 { b"[\n" } else { b",\n" })?;
        // JSON strings never hold a raw newline, so every line break is the printer's own.
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"  ")?;
            self.out.write_all(line.as_bytes())?;
        }
        self.items += 1;
        Ok(())
    }

    /// Lets what was written so far reach the reader (after each page).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Closes the array; returns how many items it holds.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.out
            .write_all(if self.items == 0 { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()?;
        Ok(self.items)
    }
}

/// Bytes as a short human figure (KiB, MiB, GiB).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// RFC 3339 rendering of a UTC millisecond timestamp, for humans (see [`store::when`]).
pub fn format_ms(ms: u64) -> String {
    store::when::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["id", "name"],
            &[
                vec!["abc".into(), "x".into()],
                vec!["a".into(), "long".into()],
            ],
        );
        assert_eq!(t, "id   name\nabc  x\na    long\n");
    }

    #[test]
    fn table_stream_prints_the_header_once_and_only_widens() {
        let mut t = TableStream::new(&["id", "name"]);
        let first = t.page(&[vec!["abc".into(), "x".into()]]);
        assert_eq!(first, "id   name\nabc  x\n");
        let second = t.page(&[
            vec!["a".into(), "y".into()],
            vec!["abcdef".into(), "z".into()],
        ]);
        assert_eq!(second, "a    y\nabcdef  z\n");
        assert_eq!(t.finish(), "");
        assert_eq!(TableStream::new(&["id"]).finish(), "id\n");
        let mut bad = TableStream::new(&["name"]);
        assert_eq!(bad.page(&[vec!["a\nforged".into()]]), "name\na\\nforged\n");
    }

    #[test]
    fn json_array_streams_what_the_pretty_printer_gives_for_the_whole() {
        let items = [
            serde_json::json!({ "id": "a\nb", "jobs": [{ "peer": "p" }], "n": 1 }),
            serde_json::json!([]),
            serde_json::json!("x"),
        ];
        for n in 0..=items.len() {
            let mut got = Vec::new();
            let mut out = JsonArray::new(&mut got);
            for item in &items[..n] {
                out.item(item).unwrap();
            }
            assert_eq!(out.finish().unwrap(), n as u64);
            let whole = serde_json::to_string_pretty(&items[..n]).unwrap() + "\n";
            assert_eq!(String::from_utf8(got).unwrap(), whole, "{n} items");
        }
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn escape_renders_controls_and_bidi_visibly() {
        let check = |input: &str, expected: &str| assert_eq!(escape(input), expected, "{input:?}");
        check("plain name.seg", "plain name.seg");
        check(
            "caf\u{e9} \u{4e2d} back\\slash",
            "caf\u{e9} \u{4e2d} back\\slash",
        );
        check("a\nb\rc\td", "a\\nb\\rc\\td");
        check("\u{1b}[1A\u{1b}[2K", "\\x1b[1A\\x1b[2K");
        check("\u{0}\u{7}\u{7f}", "\\x00\\x07\\x7f");
        check("\u{80}\u{9b}\u{9f}\u{a0}", "\\u{80}\\u{9b}\\u{9f}\u{a0}");
        check("evil\u{202e}gpj.seg", "evil\\u{202e}gpj.seg");
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
        ] {
            let shown = escape(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", u32::from(c)));
        }
        // Neighbours of the escaped ranges pass through.
        for c in [
            '\u{20}', '\u{7e}', '\u{200d}', '\u{2027}', '\u{202f}', '\u{2065}', '\u{206a}',
        ] {
            assert_eq!(escape(&c.to_string()), c.to_string(), "{c:?}");
        }
        assert!(matches!(escape("nothing to do"), Cow::Borrowed(_)));
        assert_eq!(Escaped("a\u{1b}b").to_string(), "a\\x1bb");
    }

    #[test]
    fn table_cells_cannot_break_rows_or_reach_the_terminal() {
        let t = table(
            &["file", "result"],
            &[vec![
                "x\u{1b}[1A\u{1b}[2K\nfake row\u{202e}.seg".into(),
                "ok".into(),
            ]],
        );
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains(['\u{1b}', '\u{202e}', '\r']), "{t:?}");
        assert!(
            t.contains("x\\x1b[1A\\x1b[2K\\nfake row\\u{202e}.seg  ok"),
            "{t}"
        );
    }
}

/// `print!` for command output: a reader that has gone (`edged segments | head`) ends the
/// command quietly instead of in a panic (see [`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for command output (see [`out!`]).
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writes command output to stdout (see [`Stdout`]).
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut out = stdout();
    // `Stdout` ends the process on any write error, so there is none left to handle.
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

/// Stdout for command output. A closed pipe (`edged segments --json | head -c 200`) ends the
/// process with exit code 0: the reader took what it wanted, and everything the command
/// changed was committed before it printed. Any other write error ends it with exit code 1 and
/// says so. Never a panic.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

#[derive(Debug)]
pub struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    fn check<T>(r: std::io::Result<T>) -> std::io::Result<T> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(e) => {
                eprintln!("edged: error: cannot write the output: {e}");
                std::process::exit(i32::from(crate::exit::FAILED));
            }
            ok => ok,
        }
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Self::check(self.0.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Self::check(self.0.flush())
    }
}
