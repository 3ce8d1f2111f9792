//! The key straight from the request's JSON text: one pass over the bytes, no `Value` tree.
//!
//! A small tokenizer, as strict as serde_json (it accepts exactly the documents serde_json
//! parses into a `Value`), walks the text once and writes the canonical encoding of [the
//! module docs](super) as it goes: strings unescaped, numbers tagged the way serde_json's
//! `Number` would hold them, objects with their keys sorted bytewise at every depth.
//!
//! Sorting means an object's encoding is only known once it closes, so the encoding is kept as
//! a list of segments, each a slice of a scratch buffer or of the input itself (long strings
//! without escapes are never copied). Closing an object sorts its members and reorders their
//! segments, not their bytes; the list is hashed at the end. A member repeated in one object
//! keeps its last value (serde_json's maps do the same: `insert` replaces), and at the top
//! level the [excluded fields](super::EXCLUDED_FIELDS) and `null` members are left out after
//! that, exactly as the tree-based key does.
//!
//! Buffers are per thread and reused, so a key allocates nothing in the steady state.

use std::cell::RefCell;
use std::cmp::Ordering;

use super::{EXCLUDED_FIELDS, HashWriter, MAX_HEADER};

/// The tokenizer refused the text (not one JSON document, or nested too deep). The caller
/// asks serde_json for the error to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Strings at least this long are hashed from the input in place instead of copied.
const BORROW_LEN: usize = 64;

/// Scratch buffers above this capacity are not kept for the next key.
const RETAIN_BYTES: usize = 1 << 20;

/// Feeds the canonical encoding of the JSON document in `input` to `hasher`.
///
/// Fails when `input` is not exactly one JSON document serde_json accepts, or opens more than
/// `max_depth` arrays and objects inside each other.
pub(super) fn encode(
    input: &[u8],
    max_depth: usize,
    hasher: &mut HashWriter,
) -> Result<(), Malformed> {
    thread_local! {
        static WORK: RefCell<Work> = RefCell::new(Work::default());
    }
    WORK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut work) => encode_with(&mut work, input, max_depth, hasher),
        // Not reachable (nothing in here calls back in), but never worth a panic.
        Err(_) => encode_with(&mut Work::default(), input, max_depth, hasher),
    })
}

fn encode_with(
    work: &mut Work,
    input: &[u8],
    max_depth: usize,
    hasher: &mut HashWriter,
) -> Result<(), Malformed> {
    work.clear();
    // serde_json refuses invalid UTF-8 anywhere; checking it once up front lets every string
    // below be taken as valid text.
    std::str::from_utf8(input).map_err(|_| Malformed)?;
    let result = Walk {
        input,
        pos: 0,
        w: work,
    }
    .run(max_depth);
    if result.is_ok() {
        for seg in &work.segs {
            let bytes = if seg.input {
                &input[seg.start..seg.end]
            } else {
                &work.out[seg.start..seg.end]
            };
            hasher.write(bytes);
        }
    }
    work.trim();
    result
}

/// A piece of the encoding: `out[start..end]`, or `input[start..end]` when `input`.
#[derive(Clone, Copy, Debug)]
struct Seg {
    start: usize,
    end: usize,
    input: bool,
}

/// A member of an open object: its key (bytes in `out`) and its segments `first..end` (the
/// key's own first).
#[derive(Clone, Copy, Debug)]
struct Member {
    /// The key's first 8 bytes, big-endian and zero-padded: decides most comparisons.
    head: u64,
    key: (usize, usize),
    first: usize,
    end: usize,
    /// The value is `null`.
    null: bool,
}

/// An open array or object; `header` is the index of the segment reserved for its tag and
/// length, filled when it closes.
#[derive(Clone, Copy, Debug)]
enum Frame {
    Array { header: usize, count: usize },
    Object { header: usize, members: usize },
}

#[derive(Default)]
struct Work {
    out: Vec<u8>,
    segs: Vec<Seg>,
    members: Vec<Member>,
    frames: Vec<Frame>,
    tmp: Vec<Seg>,
    /// Segments below this index belong to a member that is not the current one of its
    /// object: new bytes never extend them.
    barrier: usize,
}

impl Work {
    fn clear(&mut self) {
        self.out.clear();
        self.segs.clear();
        self.members.clear();
        self.frames.clear();
        self.tmp.clear();
        self.barrier = 0;
    }

    fn trim(&mut self) {
        if self.out.capacity() > RETAIN_BYTES {
            *self = Self::default();
        }
    }

    /// Adds `out[start..end]` to the encoding, extending the last segment when it ends there.
    #[inline]
    fn push_out(&mut self, start: usize, end: usize) {
        if self.segs.len() > self.barrier
            && let Some(last) = self.segs.last_mut()
            && !last.input
            && last.end == start
        {
            last.end = end;
            return;
        }
        self.segs.push(Seg {
            start,
            end,
            input: false,
        });
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        let start = self.out.len();
        self.out.push(b);
        self.push_out(start, start + 1);
    }

    /// A tag and 8 raw bytes (numbers).
    #[inline]
    fn fixed(&mut self, tag: u8, bytes: [u8; 8]) {
        let start = self.out.len();
        self.out.push(tag);
        self.out.extend_from_slice(&bytes);
        self.push_out(start, start + 9);
    }

    /// Reserves the segment of a container's header.
    fn placeholder(&mut self) -> usize {
        self.segs.push(Seg {
            start: 0,
            end: 0,
            // An input segment is never extended by later bytes.
            input: true,
        });
        self.segs.len() - 1
    }

    /// Writes a container's header into its reserved segment.
    fn fill(&mut self, at: usize, tag: u8, len: usize) {
        let start = self.out.len();
        self.out.push(tag);
        leb128(&mut self.out, len as u64);
        self.segs[at] = Seg {
            start,
            end: self.out.len(),
            input: false,
        };
    }

    fn close_array(&mut self, header: usize, count: usize) {
        self.fill(header, b'a', count);
    }

    /// Sorts the members of the object whose header is `header`, keeps the last of equal keys
    /// (and, for the top level, drops excluded and `null` members), then writes its header.
    fn close_object(&mut self, header: usize, base: usize, top_level: bool) {
        let Self {
            out,
            segs,
            members,
            tmp,
            ..
        } = self;
        let own = &mut members[base..];
        let dropped = |m: &Member| top_level && (m.null || is_excluded(&out[m.key.0..m.key.1]));
        let clean =
            own.windows(2).all(|p| order(out, &p[0], &p[1]).is_lt()) && !own.iter().any(dropped);
        let count = if clean {
            own.len()
        } else {
            // Input order breaks ties, so the last of equal keys ends each run.
            own.sort_unstable_by(|a, b| order(out, a, b).then(a.first.cmp(&b.first)));
            tmp.clear();
            tmp.extend_from_slice(&segs[header + 1..]);
            segs.truncate(header + 1);
            let offset = header + 1;
            let mut kept = 0;
            for (i, m) in own.iter().enumerate() {
                let replaced = own
                    .get(i + 1)
                    .is_some_and(|next| order(out, m, next).is_eq());
                if replaced || dropped(m) {
                    continue;
                }
                segs.extend_from_slice(&tmp[m.first - offset..m.end - offset]);
                kept += 1;
            }
            kept
        };
        members.truncate(base);
        self.fill(header, b'o', count);
    }
}

fn is_excluded(key: &[u8]) -> bool {
    EXCLUDED_FIELDS.iter().any(|f| f.as_bytes() == key)
}

/// Bytewise key order.
#[inline]
fn order(out: &[u8], a: &Member, b: &Member) -> Ordering {
    a.head
        .cmp(&b.head)
        .then_with(|| out[a.key.0..a.key.1].cmp(&out[b.key.0..b.key.1]))
}

#[inline]
fn head(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => key
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &b)| acc | u64::from(b) << (56 - 8 * i)),
    }
}

/// Unsigned LEB128.
#[inline]
fn leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The tokenizer: `input[pos..]` is what is left to read.
struct Walk<'a, 'w> {
    input: &'a [u8],
    pos: usize,
    w: &'w mut Work,
}

impl Walk<'_, '_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The whole document, with an explicit stack of open containers (no recursion, so the
    /// depth costs heap, not stack).
    fn run(&mut self, max_depth: usize) -> Result<(), Malformed> {
        'value: loop {
            self.skip_ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if self.w.frames.len() >= max_depth {
                        return Err(Malformed);
                    }
                    self.pos += 1;
                    let header = self.w.placeholder();
                    self.skip_ws();
                    if open == b'{' {
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            self.w.fill(header, b'o', 0);
                        } else {
                            let members = self.w.members.len();
                            self.w.frames.push(Frame::Object { header, members });
                            self.member_key()?;
                            continue 'value;
                        }
                    } else if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.w.close_array(header, 0);
                    } else {
                        self.w.frames.push(Frame::Array { header, count: 1 });
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string(Some(b's'))?;
                }
                Some(b't') => self.literal(b"true", b't')?,
                Some(b'f') => self.literal(b"false", b'f')?,
                Some(b'n') => self.literal(b"null", b'n')?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(Malformed),
            }
            // After a value: a comma, the end of its container, or the end of the document.
            loop {
                self.skip_ws();
                let next = self.peek();
                let Some(frame) = self.w.frames.last_mut() else {
                    return if self.pos == self.input.len() {
                        Ok(())
                    } else {
                        Err(Malformed)
                    };
                };
                match (frame, next) {
                    (Frame::Array { count, .. }, Some(b',')) => {
                        *count += 1;
                        self.pos += 1;
                        continue 'value;
                    }
                    (&mut Frame::Array { header, count }, Some(b']')) => {
                        self.pos += 1;
                        self.w.frames.pop();
                        self.w.close_array(header, count);
                    }
                    (Frame::Object { .. }, Some(b',')) => {
                        self.end_member();
                        self.pos += 1;
                        self.skip_ws();
                        self.member_key()?;
                        continue 'value;
                    }
                    (&mut Frame::Object { header, members }, Some(b'}')) => {
                        self.end_member();
                        self.pos += 1;
                        self.w.frames.pop();
                        let top_level = self.w.frames.is_empty();
                        self.w.close_object(header, members, top_level);
                    }
                    _ => return Err(Malformed),
                }
            }
        }
    }

    /// `"key" :` — the key is written (length-prefixed) and a member opened; the value follows.
    fn member_key(&mut self) -> Result<(), Malformed> {
        if self.peek() != Some(b'"') {
            return Err(Malformed);
        }
        let first = self.w.segs.len();
        self.w.barrier = first;
        let key = self.string(None)?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(Malformed);
        }
        self.pos += 1;
        self.skip_ws();
        let null = self.peek() == Some(b'n');
        let head = head(&self.w.out[key.0..key.1]);
        self.w.members.push(Member {
            head,
            key,
            first,
            end: first,
            null,
        });
        Ok(())
    }

    /// Closes the current member of the innermost (object) frame.
    fn end_member(&mut self) {
        let end = self.w.segs.len();
        if let Some(member) = self.w.members.last_mut() {
            member.end = end;
        }
    }

    fn literal(&mut self, text: &[u8], tag: u8) -> Result<(), Malformed> {
        if !self.input[self.pos..].starts_with(text) {
            return Err(Malformed);
        }
        self.pos += text.len();
        self.w.byte(tag);
        Ok(())
    }

    /// A string at `pos` (on its opening quote): a value (`tag` `s`) or a key (no tag).
    /// Returns where its unescaped bytes are in `out` (meaningful for keys, which are always
    /// copied).
    fn string(&mut self, tag: Option<u8>) -> Result<(usize, usize), Malformed> {
        let input = self.input;
        let start = self.pos + 1;
        let stop = find_special(input, start).ok_or(Malformed)?;
        match input[stop] {
            b'"' => {
                let text = &input[start..stop];
                self.pos = stop + 1;
                let w = &mut *self.w;
                let header = w.out.len();
                if let Some(tag) = tag {
                    w.out.push(tag);
                }
                leb128(&mut w.out, text.len() as u64);
                if tag.is_some() && text.len() >= BORROW_LEN {
                    let end = w.out.len();
                    w.push_out(header, end);
                    w.segs.push(Seg {
                        start,
                        end: stop,
                        input: true,
                    });
                    Ok((0, 0))
                } else {
                    let at = w.out.len();
                    w.out.extend_from_slice(text);
                    let end = w.out.len();
                    w.push_out(header, end);
                    Ok((at, end))
                }
            }
            b'\\' => self.escaped(tag, start, stop),
            // A raw control character.
            _ => Err(Malformed),
        }
    }

    /// A string with escapes: unescaped into `out` behind a gap its header is then written
    /// into (right-aligned), so the text is copied once.
    fn escaped(
        &mut self,
        tag: Option<u8>,
        start: usize,
        mut stop: usize,
    ) -> Result<(usize, usize), Malformed> {
        let input = self.input;
        let out = &mut self.w.out;
        let gap = out.len();
        out.resize(gap + MAX_HEADER, 0);
        let content = out.len();
        let mut from = start;
        loop {
            out.extend_from_slice(&input[from..stop]);
            match input[stop] {
                b'"' => break,
                b'\\' => from = unescape(input, stop + 1, out)?,
                _ => return Err(Malformed),
            }
            stop = find_special(input, from).ok_or(Malformed)?;
        }
        self.pos = stop + 1;
        let end = out.len();
        let mut header = [0; MAX_HEADER];
        let mut len = 0;
        if let Some(tag) = tag {
            header[0] = tag;
            len = 1;
        }
        let mut v = (end - content) as u64;
        while v >= 0x80 {
            header[len] = (v as u8) | 0x80;
            len += 1;
            v >>= 7;
        }
        header[len] = v as u8;
        len += 1;
        let at = content - len;
        out[at..content].copy_from_slice(&header[..len]);
        self.w.push_out(at, end);
        Ok((content, end))
    }

    /// A number, tagged as serde_json's `Number` would hold it: `u` for a non-negative integer
    /// that fits a u64, `i` for a negative one that fits an i64 (except `-0`), `d` and the f64
    /// serde_json parses for everything else.
    fn number(&mut self) -> Result<(), Malformed> {
        let input = self.input;
        let start = self.pos;
        let mut i = start;
        let negative = input.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        match input.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(input, i),
            _ => return Err(Malformed),
        }
        let int_end = i;
        let mut integer = true;
        if input.get(i) == Some(&b'.') {
            integer = false;
            let frac = i + 1;
            i = digits(input, frac);
            if i == frac {
                return Err(Malformed);
            }
        }
        if let Some(b'e' | b'E') = input.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = input.get(i) {
                i += 1;
            }
            let exp = i;
            i = digits(input, exp);
            if i == exp {
                return Err(Malformed);
            }
        }
        self.pos = i;
        if integer && let Some(n) = parse_u64(&input[int_start..int_end]) {
            if !negative {
                self.w.fixed(b'u', n.to_le_bytes());
                return Ok(());
            }
            if n != 0 && n <= 1 << 63 {
                // -2^63 included: the negation wraps onto i64::MIN.
                self.w.fixed(b'i', (n as i64).wrapping_neg().to_le_bytes());
                return Ok(());
            }
        }
        // Fractions, exponents, `-0` and integers out of range become floats. serde_json's
        // own parser makes the f64, so its bits are the ones its `Value` holds.
        let f: f64 = serde_json::from_slice(&input[start..i]).map_err(|_| Malformed)?;
        self.w.fixed(b'd', f.to_bits().to_le_bytes());
        Ok(())
    }
}

/// The end of the run of ASCII digits starting at `i`.
#[inline]
fn digits(input: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = input.get(i) {
        i += 1;
    }
    i
}

/// Decimal digits as a u64; `None` on overflow.
#[inline]
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The escape after a backslash (`input[at]` is the byte after it), unescaped into `out`.
/// Returns where the string continues. Surrogates must pair, as serde_json requires of text.
fn unescape(input: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    let byte = match input.get(at) {
        Some(b'"') => b'"',
        Some(b'\\') => b'\\',
        Some(b'/') => b'/',
        Some(b'b') => 0x08,
        Some(b'f') => 0x0c,
        Some(b'n') => b'\n',
        Some(b'r') => b'\r',
        Some(b't') => b'\t',
        Some(b'u') => {
            let lead = hex4(input, at + 1)?;
            let (code, next) = match lead {
                0xDC00..=0xDFFF => return Err(Malformed),
                0xD800..=0xDBFF => {
                    if input.get(at + 5..at + 7) != Some(b"\\u") {
                        return Err(Malformed);
                    }
                    let trail = hex4(input, at + 7)?;
                    if !(0xDC00..=0xDFFF).contains(&trail) {
                        return Err(Malformed);
                    }
                    let code = 0x1_0000 + ((lead - 0xD800) << 10) + (trail - 0xDC00);
                    (code, at + 11)
                }
                code => (code, at + 5),
            };
            let c = char::from_u32(code).ok_or(Malformed)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            return Ok(next);
        }
        _ => return Err(Malformed),
    };
    out.push(byte);
    Ok(at + 1)
}

/// Four hex digits at `at`.
fn hex4(input: &[u8], at: usize) -> Result<u32, Malformed> {
    let digits = input.get(at..at + 4).ok_or(Malformed)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Malformed),
        };
        Ok(acc << 4 | u32::from(v))
    })
}

/// The first `"`, `\` or control byte at or after `i`, eight bytes at a time.
#[inline]
fn find_special(input: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Flags the bytes of `x` below `n`; the lowest flag is always a real one (a borrow can
    // only flag bytes above it).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    while let Some(chunk) = input.get(i..i + 8).and_then(|c| c.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        let flags = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    input[i.min(input.len())..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| i + at)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::{cache_key, cache_key_bytes, cache_key_or_error};
    use crate::cache::{CacheNamespace, CacheScope};
    use crate::parsed::from_slice_max_depth;

    const SCOPE: CacheScope<'static> = CacheScope {
        backend_name: "b",
        auth_identity: "id",
    };
    const DEPTH: usize = 512;

    /// The one-pass key of `text` equals the tree's for both namespaces.
    fn agrees(text: &str) {
        let tree: Value = from_slice_max_depth(text.as_bytes(), DEPTH)
            .unwrap_or_else(|err| panic!("{text}: {err}"));
        for ns in [CacheNamespace::Anthropic, CacheNamespace::OpenAI] {
            let bytes = cache_key_bytes(text.as_bytes(), ns, &SCOPE, DEPTH)
                .unwrap_or_else(|_| panic!("refused: {text}"));
            assert_eq!(bytes, cache_key(&tree, ns, &SCOPE), "{text}");
        }
    }

    #[test]
    fn agrees_with_the_tree_on_every_kind_of_value() {
        let long = "y".repeat(super::BORROW_LEN * 3);
        let long_escaped = format!("{long}\\n\\\"{long}\\u00e9");
        let docs = [
            r#"{}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#""top""#.to_owned(),
            r#"12"#.to_owned(),
            r#"null"#.to_owned(),
            " \t\r\n{ \"model\" : \"m\" , \"max_tokens\" :\n5 } \n".to_owned(),
            r#"{"b":{"z":[1,{"y":2,"x":null}],"a":"s"},"a":[{"d":1.5,"c":-2}],"c":{}}"#.to_owned(),
            r#"{"a":[[],[[]],{},[{}],{"x":[]}],"e":{"":{"":""}}}"#.to_owned(),
            // Escapes of every kind, raw multibyte text, surrogate pairs.
            r#"{"s":"q\"b\\s\/b\bf\fn\nr\rt\tu\u0041\u00e9\u20ac\ud83d\ude00\u0000end"}"#.to_owned(),
            r#"{"k\u0065y":"v","ke\u0079":"w","\u00e9":"é","é\n":1}"#.to_owned(),
            r#"{"raw":"héllo wörld 日本語 😀"}"#.to_owned(),
            format!(r#"{{"long":"{long}","esc":"{long_escaped}","{long}":1}}"#),
            // Numbers of every shape.
            r#"[0,-0,1,-1,1.0,-1.0,0.5,1e2,1E2,1e+2,1e-2,-0.0,0e0,1.5e300,-1.5e-300]"#.to_owned(),
            r#"[18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809]"#.to_owned(),
            r#"[9223372036854775807,9223372036854775808,-18446744073709551615,-18446744073709551616]"#.to_owned(),
            r#"[123456789012345678901234567890,0.1,0.30000000000000004,2.2250738585072014e-308,5e-324]"#.to_owned(),
            r#"[1.7976931348623157e308,4.9406564584124654e-324,1e-400,-1e-400,0.000000000000000000001]"#.to_owned(),
            r#"{"temperature":0.7,"top_p":1,"max_tokens":32000,"cache_ttl_secs":60}"#.to_owned(),
            // Duplicate keys: the last value counts, nested and at the top level.
            r#"{"a":1,"b":2,"a":3}"#.to_owned(),
            r#"{"x":{"k":[1],"j":0,"k":{"z":1,"z":2}},"x":{"k":"last"}}"#.to_owned(),
            r#"{"a":1,"a":null}"#.to_owned(),
            r#"{"a":null,"a":1}"#.to_owned(),
            r#"{"stream":true,"stream":false,"m":1}"#.to_owned(),
            // Top-level exclusions and nulls; nested ones count.
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"metadata":{"user_id":"u"},"user":"u","t":null}"#.to_owned(),
            r#"{"x":{"stream":true,"metadata":null,"t":null}}"#.to_owned(),
            r#"[{"stream":true}]"#.to_owned(),
            // Already sorted (no reordering) and reverse sorted, narrow and wide.
            r#"{"a":1,"b":2,"c":3}"#.to_owned(),
            r#"{"c":1,"b":2,"a":3}"#.to_owned(),
            format!(
                "{{{}}}",
                (0..100).rev().map(|i| format!(r#""f{i:03}":{{"v":[{i},"{i}"]}}"#)).collect::<Vec<_>>().join(",")
            ),
            // Keys that share long prefixes, differ only past 8 bytes, or are prefixes.
            r#"{"abcdefghZ":1,"abcdefghA":2,"abcdefgh":3,"abcdefg":4,"":5,"a\u0000":6,"a":7}"#.to_owned(),
        ];
        for doc in &docs {
            agrees(doc);
        }
    }

    #[test]
    fn deep_documents_agree_and_depth_is_bounded() {
        let nested = |n: usize| format!("{}1{}", r#"{"a":["#.repeat(n), "]}".repeat(n));
        agrees(&nested(200));
        // 2 levels per repetition: 256 fit in 512 exactly, 257 do not.
        agrees(&nested(256));
        let too_deep = nested(257);
        assert!(
            cache_key_bytes(
                too_deep.as_bytes(),
                CacheNamespace::Anthropic,
                &SCOPE,
                DEPTH
            )
            .is_err()
        );
        let err = cache_key_or_error(
            too_deep.as_bytes(),
            CacheNamespace::Anthropic,
            &SCOPE,
            DEPTH,
        )
        .expect_err("too deep");
        assert_eq!(err.to_string(), "nesting deeper than 512 levels");
        let small = "[[[]]]";
        assert!(cache_key_bytes(small.as_bytes(), CacheNamespace::Anthropic, &SCOPE, 3).is_ok());
        assert!(cache_key_bytes(small.as_bytes(), CacheNamespace::Anthropic, &SCOPE, 2).is_err());
    }

    #[test]
    fn refuses_what_serde_json_refuses_with_its_error() {
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"}",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{a:1}",
            b"{\"a\":1}x",
            b"{\"a\":1} {}",
            b"[01]",
            b"[1.]",
            b"[.5]",
            b"[-]",
            b"[1e]",
            b"[1e+]",
            b"[+1]",
            b"[1e400]",
            b"[-1e400]",
            b"[1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000]",
            b"[tru]",
            b"[nul]",
            b"[True]",
            b"[NaN]",
            b"[\"a]",
            b"[\"a\\x\"]",
            b"[\"\\u12\"]",
            b"[\"\\u12g4\"]",
            b"[\"\\ud800\"]",
            b"[\"\\ud800x\"]",
            b"[\"\\ud800\\n\"]",
            b"[\"\\ud800\\u0041\"]",
            b"[\"\\udc00\"]",
            b"[\"tab\there\"]",
            b"[\"nl\nhere\"]",
            b"[\"\xff\"]",
            b"[\"\xc3\"]",
            b"\xef\xbb\xbf{}",
            b"{\"a\":1}\x00",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
            b"[\"unterminated",
            b"[\"ends in backslash\\",
        ];
        for &text in bad {
            let shown = String::from_utf8_lossy(text);
            assert!(
                cache_key_bytes(text, CacheNamespace::Anthropic, &SCOPE, DEPTH).is_err(),
                "accepted {shown:?}"
            );
            let expected = from_slice_max_depth::<Value>(text, DEPTH).expect_err(&shown);
            let got = cache_key_or_error(text, CacheNamespace::Anthropic, &SCOPE, DEPTH)
                .expect_err(&shown);
            assert_eq!(got.to_string(), expected.to_string(), "{shown:?}");
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        // Every position in and across the 8-byte words, with high bytes around.
        for len in 0..24 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut text = vec![0xc3; len];
                    for (i, b) in text.iter_mut().enumerate() {
                        *b = if i % 2 == 0 { b'a' } else { 0xa9 };
                    }
                    text[at] = special;
                    for from in 0..=at {
                        assert_eq!(
                            super::find_special(&text, from),
                            Some(at),
                            "{text:?} from {from}"
                        );
                    }
                }
            }
            let plain = vec![b' '; len];
            assert_eq!(super::find_special(&plain, 0), None);
        }
        // 0x20 and DEL are not special.
        assert_eq!(super::find_special(b" \x7f!#[]~\x20\"", 0), Some(8));
    }

    #[test]
    fn scratch_is_reused_and_big_buffers_are_dropped() {
        let big = format!(r#"{{"s":"{}"}}"#, "\\n".repeat(super::RETAIN_BYTES));
        agrees(&big);
        agrees(r#"{"after":"a big one","n":[1,2]}"#);
        agrees(&big);
    }
}
