//! The member list Python's `tarfile` (CPython 3.11, the pinned one) builds for an archive, and
//! which bytes `extract` / `extractfile` of one name hand to torch's tar loader (torch < 0.4
//! format). Shared by the reader ([`super::tar`]) and the scanner, so both see the bytes
//! `torch.load` would see.
//!
//! What tarfile does, and this module mirrors:
//! * A header block is accepted when its checksum field (octal text or base-256) equals the
//!   signed or the unsigned byte sum; every numeric field must parse, else the header is invalid.
//! * An invalid, empty or truncated FIRST header makes `tarfile.open` raise ReadError (a
//!   TarError), after which torch unpickles the file from byte 0 ([`Open::NotTar`]). Later, the
//!   same errors, or a block of zeros, end the archive quietly.
//! * Only regular members (`0`, NUL, `7`, `S`) and unknown types are followed by data; links,
//!   directories, devices and fifos carry none whatever their size field says. An AREGTYPE name
//!   ending in `/` is a directory. The ustar prefix is joined to every non-GNU member's name.
//! * GNU long names/links (`L`/`K`) and PAX headers (`x`/`X` local, `g` global) patch the next
//!   member (`path`, `linkpath`, `size`; `size` also moves the next header). A header missing
//!   after one of them is a ReadError (TarError) wherever it happens.
//! * Member data that runs past the end of the file is a ReadError when the next header is
//!   sought, i.e. while tarfile lists the members.
//! * `getmember(name)` is the LAST member of that exact name.
//!
//! What it does not mirror (reported as [`Unmirrored`], which callers treat as unreadable):
//! GNU sparse members, negative sizes (tarfile would seek backwards, possibly forever),
//! non-ASCII digits in PAX numbers, more than [`MAX_MEMBERS`] members.

use std::fmt;

pub const BLOCK: usize = 512;
/// Beyond this many members ckpt gives up rather than hold an unbounded list.
pub const MAX_MEMBERS: usize = 1 << 20;
/// Links followed before giving up (Python would hit its recursion limit on a cycle).
const MAX_LINK_HOPS: usize = 64;
/// Extended headers (long names, PAX) in a row before giving up: Python recurses once for each
/// and raises RecursionError near 1000, which is not a TarError.
const MAX_EXTENDED: usize = 64;
/// Sizes beyond this are all "past the end of any file": keeps the arithmetic in range.
const HUGE: i128 = 1 << 100;

/// What kind of member a type flag makes, after tarfile's AREGTYPE-with-slash rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    SymLink,
    Device,
    Dir,
    Fifo,
    /// A type tarfile does not know: treated as a regular file (data follows).
    Unknown,
}

impl Kind {
    fn of(flag: u8) -> Kind {
        match flag {
            b'0' | 0 | b'7' => Kind::Regular,
            b'1' => Kind::HardLink,
            b'2' => Kind::SymLink,
            b'3' | b'4' => Kind::Device,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            _ => Kind::Unknown,
        }
    }
    /// Whether data blocks follow the header (`isreg() or type not in SUPPORTED_TYPES`).
    fn has_data(self) -> bool {
        matches!(self, Kind::Regular | Kind::Unknown)
    }
}

/// A member as tarfile lists it. Names are bytes: tarfile decodes them with surrogateescape,
/// which is lossless, so comparing bytes compares what tarfile compares.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: Vec<u8>,
    /// The type flag as tarfile reports it (an AREGTYPE name ending in `/` reads `5`).
    #[cfg_attr(not(feature = "internals"), expect(dead_code, reason = "only the integration tests read it"))]
    pub flag: u8,
    pub linkname: Vec<u8>,
    pub kind: Kind,
    /// Where the member's (first) header starts.
    pub header: usize,
    pub data: usize,
    /// The size tarfile believes (header or PAX), clamped to [`HUGE`]; never negative.
    pub size: u64,
}

impl Member {
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The outcome of `tarfile.open(fileobj=f, mode='r:')` followed by loading every member.
#[derive(Debug)]
pub enum Open {
    /// tarfile reads the archive.
    Tar(Vec<Member>),
    /// tarfile raises a TarError: torch falls back to unpickling the file from byte 0.
    #[cfg_attr(not(feature = "internals"), expect(dead_code, reason = "only the integration tests read it"))]
    NotTar(String),
}

/// Something tarfile does that ckpt does not reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmirrored(pub String);

impl fmt::Display for Unmirrored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why one header could not be read (tarfile's HeaderError subclasses).
enum HeaderError {
    Empty,
    Truncated,
    EndOfArchive,
    Invalid,
    /// A header missing after a GNU long name or PAX header.
    Subsequent,
    Unmirrored(String),
}

/// Lists the members the way `tarfile.open(fileobj=f, mode='r:')` and `getmembers()` do.
pub fn open(bytes: &[u8]) -> Result<Open, Unmirrored> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        offset: 0,
        global: Vec::new(),
    };
    let mut members = Vec::new();
    loop {
        // tarfile.next(): reaching the next header checks that the byte before it exists.
        if reader.offset != reader.pos {
            if reader.offset > bytes.len() {
                return Ok(Open::NotTar("unexpected end of data".into()));
            }
            reader.pos = reader.offset;
        }
        let at = reader.offset;
        match reader.member() {
            Ok(m) => {
                members.push(m);
                if members.len() > MAX_MEMBERS {
                    return Err(Unmirrored(format!("more than {MAX_MEMBERS} tar members")));
                }
            }
            Err(HeaderError::Unmirrored(why)) => return Err(Unmirrored(why)),
            Err(HeaderError::Subsequent) => {
                return Ok(Open::NotTar(format!(
                    "missing or bad header after an extended header at byte {at}"
                )))
            }
            Err(HeaderError::EndOfArchive) => break,
            Err(HeaderError::Empty | HeaderError::Truncated | HeaderError::Invalid) if at == 0 => {
                return Ok(Open::NotTar("the first block is not a tar header".into()))
            }
            Err(_) => break,
        }
    }
    Ok(Open::Tar(members))
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// The file position (what `fileobj.tell()` would say).
    pos: usize,
    /// Where tarfile expects the next header (`tarfile.offset`).
    offset: usize,
    /// Global PAX records, in first-insertion order (a Python dict).
    global: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A header's fields as `TarInfo.frombuf` reads them.
struct Header {
    name: Vec<u8>,
    linkname: Vec<u8>,
    flag: u8,
    size: i128,
}

impl Reader<'_> {
    /// `fileobj.read(n)`: up to n bytes from the position.
    fn read(&mut self, n: usize) -> &[u8] {
        let start = self.pos.min(self.bytes.len());
        let end = start.saturating_add(n).min(self.bytes.len());
        self.pos = start + (end - start);
        &self.bytes[start..end]
    }

    /// `TarInfo.fromtarfile`: one header and whatever extended headers precede the member.
    fn member(&mut self) -> Result<Member, HeaderError> {
        self.member_at(0)
    }

    /// `depth` extended headers precede this one (Python recurses once for each).
    fn member_at(&mut self, depth: usize) -> Result<Member, HeaderError> {
        if depth > MAX_EXTENDED {
            return Err(HeaderError::Unmirrored(format!(
                "more than {MAX_EXTENDED} extended headers in a row"
            )));
        }
        let header_at = self.pos;
        let block = self.read(BLOCK).to_vec();
        let h = parse_header(&block)?;
        match h.flag {
            b'L' | b'K' => self.gnu_long(h, header_at, depth),
            b'S' => Err(HeaderError::Unmirrored(format!(
                "GNU sparse member at byte {header_at}"
            ))),
            b'x' | b'g' | b'X' => self.pax(h, header_at, depth),
            _ => self.builtin(h, header_at),
        }
    }

    /// `_proc_builtin`: data follows regular and unknown members only. The next header is
    /// placed by the header's own size; global PAX records then patch the member.
    fn builtin(&mut self, h: Header, header_at: usize) -> Result<Member, HeaderError> {
        let kind = Kind::of(h.flag);
        let mut m = Member {
            name: h.name,
            flag: h.flag,
            linkname: h.linkname,
            kind,
            header: header_at,
            data: self.pos,
            size: 0,
        };
        self.advance(&m, h.size, header_at)?;
        let mut size = h.size;
        apply_pax(&mut m, &mut size, &self.global)?;
        if kind == Kind::Dir {
            trim_slashes(&mut m.name);
        }
        set_size(&mut m, size, header_at)?;
        Ok(m)
    }

    /// Where the next header starts after a member of `size` bytes.
    fn advance(&mut self, m: &Member, size: i128, header_at: usize) -> Result<(), HeaderError> {
        if !m.kind.has_data() {
            self.offset = m.data;
            return Ok(());
        }
        if size < 0 {
            return Err(negative(header_at));
        }
        self.offset = blocks(size as u64)
            .and_then(|n| m.data.checked_add(n))
            .unwrap_or(usize::MAX);
        Ok(())
    }

    /// `_proc_gnulong`: the payload names the next member (or its link target).
    fn gnu_long(&mut self, h: Header, header_at: usize, depth: usize) -> Result<Member, HeaderError> {
        let len = payload_len(h.size, header_at)?;
        let payload = nts(self.read(len)).to_vec();
        let mut next = self.member_at(depth + 1).map_err(subsequent)?;
        next.header = header_at;
        if h.flag == b'L' {
            next.name = payload;
        } else {
            next.linkname = payload;
        }
        if next.kind == Kind::Dir && next.name.last() == Some(&b'/') {
            next.name.pop();
        }
        Ok(next)
    }

    /// `_proc_pax`: records for the next member (`x`, `X`) or all following ones (`g`).
    fn pax(&mut self, h: Header, header_at: usize, depth: usize) -> Result<Member, HeaderError> {
        let len = payload_len(h.size, header_at)?;
        let payload = self.read(len).to_vec();
        let mut records = if h.flag == b'g' {
            Vec::new()
        } else {
            self.global.clone()
        };
        parse_pax(&payload, &mut records)?;
        if h.flag == b'g' {
            for (k, v) in records {
                insert(&mut self.global, k, v);
            }
            return self.member_at(depth + 1).map_err(subsequent);
        }
        let mut next = self.member_at(depth + 1).map_err(subsequent)?;
        let mut size = next.size as i128;
        apply_pax(&mut next, &mut size, &records)?;
        next.header = header_at;
        if records.iter().any(|(k, _)| k == b"size") {
            self.advance(&next, size, header_at)?;
        }
        set_size(&mut next, size, header_at)?;
        Ok(next)
    }
}

/// A member's size; a negative one is refused where data would be read.
fn set_size(m: &mut Member, size: i128, header_at: usize) -> Result<(), HeaderError> {
    if size < 0 && m.kind.has_data() {
        return Err(negative(header_at));
    }
    m.size = size.clamp(0, HUGE) as u64;
    Ok(())
}

fn negative(header_at: usize) -> HeaderError {
    HeaderError::Unmirrored(format!("member at byte {header_at} has a negative size"))
}

fn subsequent(e: HeaderError) -> HeaderError {
    match e {
        HeaderError::Unmirrored(w) => HeaderError::Unmirrored(w),
        _ => HeaderError::Subsequent,
    }
}

/// The bytes an extended header's payload occupies (tarfile reads whole blocks).
fn payload_len(size: i128, header_at: usize) -> Result<usize, HeaderError> {
    if size < 0 {
        return Err(HeaderError::Unmirrored(format!(
            "extended header at byte {header_at} has a negative size"
        )));
    }
    Ok(blocks(size.min(HUGE) as u64).unwrap_or(usize::MAX))
}

/// `size` rounded up to whole blocks, if it fits in memory addresses.
fn blocks(size: u64) -> Option<usize> {
    usize::try_from(size.checked_next_multiple_of(BLOCK as u64)?).ok()
}

/// A dict insert: a new key goes last, an existing one keeps its place.
fn insert(records: &mut Vec<(Vec<u8>, Vec<u8>)>, key: Vec<u8>, value: Vec<u8>) {
    match records.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => records.push((key, value)),
    }
}

/// `"%d %s=%s\n"` records, parsed as tarfile's regex does: a decimal length, a space, a
/// keyword up to `=`, and a value running to one byte before the record's end.
fn parse_pax(buf: &[u8], records: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), HeaderError> {
    let mut pos = 0usize;
    loop {
        let digits = buf[pos.min(buf.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || buf.get(pos + digits) != Some(&b' ') {
            return Ok(());
        }
        let kw_start = pos + digits + 1;
        let kw_len = buf[kw_start..].iter().take_while(|&&b| b != b'=').count();
        if kw_len == 0 || kw_start + kw_len >= buf.len() {
            return Ok(());
        }
        let length: usize = std::str::from_utf8(&buf[pos..pos + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if length == 0 {
            return Err(HeaderError::Invalid);
        }
        let keyword = buf[kw_start..kw_start + kw_len].to_vec();
        if keyword.starts_with(b"GNU.sparse.") {
            return Err(HeaderError::Unmirrored("GNU sparse PAX records".into()));
        }
        let value_start = kw_start + kw_len + 1;
        let value_end = pos.saturating_add(length - 1).min(buf.len());
        // Only the records that change what torch reads are kept (a header of millions of
        // other records must not cost a search each).
        if matches!(keyword.as_slice(), b"path" | b"linkpath" | b"size") {
            let value = buf.get(value_start..value_end).unwrap_or_default().to_vec();
            insert(records, keyword, value);
        }
        pos = pos.saturating_add(length);
        if pos >= buf.len() {
            return Ok(());
        }
    }
}

/// `_apply_pax_info`: `path` (trailing slashes removed), `linkpath` and `size` (0 when it is
/// not an integer) override the header.
fn apply_pax(m: &mut Member, size: &mut i128, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), HeaderError> {
    for (k, v) in records {
        match k.as_slice() {
            b"path" => {
                m.name = v.clone();
                trim_slashes(&mut m.name);
            }
            b"linkpath" => m.linkname = v.clone(),
            b"size" => {
                *size = match py_int(v, 10) {
                    Ok(n) => n,
                    Err(PyIntError::Invalid) => 0,
                    Err(PyIntError::NonAscii) => {
                        return Err(HeaderError::Unmirrored("a PAX size with non-ASCII characters".into()))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn trim_slashes(name: &mut Vec<u8>) {
    while name.last() == Some(&b'/') {
        name.pop();
    }
}

/// `TarInfo.frombuf`.
fn parse_header(block: &[u8]) -> Result<Header, HeaderError> {
    if block.is_empty() {
        return Err(HeaderError::Empty);
    }
    if block.len() != BLOCK {
        return Err(HeaderError::Truncated);
    }
    if block.iter().all(|&b| b == 0) {
        return Err(HeaderError::EndOfArchive);
    }
    let chksum = nti(&block[148..156]).ok_or(HeaderError::Invalid)?;
    if !checksums(block).contains(&chksum) {
        return Err(HeaderError::Invalid);
    }
    // mode, uid, gid, size, mtime, devmajor, devminor: any one that does not parse makes the
    // whole header invalid.
    let fields = [100..108, 108..116, 116..124, 124..136, 136..148, 329..337, 337..345];
    let mut numbers = [0i128; 7];
    for (n, range) in numbers.iter_mut().zip(fields) {
        *n = nti(&block[range]).ok_or(HeaderError::Invalid)?;
    }
    let mut flag = block[156];
    let mut name = nts(&block[0..100]).to_vec();
    if flag == 0 && name.last() == Some(&b'/') {
        flag = b'5';
    }
    if flag == b'5' {
        trim_slashes(&mut name);
    }
    let prefix = nts(&block[345..500]);
    if !prefix.is_empty() && !matches!(flag, b'L' | b'K' | b'S') {
        let mut joined = prefix.to_vec();
        joined.push(b'/');
        joined.extend_from_slice(&name);
        name = joined;
    }
    Ok(Header {
        name,
        linkname: nts(&block[157..257]).to_vec(),
        flag,
        size: numbers[3].min(HUGE),
    })
}

/// tarfile's `calc_chksums`: 256 (the checksum field as spaces) plus every other byte, read
/// unsigned and signed.
fn checksums(block: &[u8]) -> [i128; 2] {
    let mut unsigned: i128 = 256;
    let mut signed: i128 = 256;
    for (i, &b) in block.iter().enumerate() {
        if !(148..156).contains(&i) {
            unsigned += i128::from(b);
            signed += i128::from(b as i8);
        }
    }
    [unsigned, signed]
}

/// `nts`: up to the first NUL.
fn nts(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

/// tarfile's `nti`: base-256 when the first byte is 0x80 (positive) or 0xff (negative), else
/// `int(text.strip() or "0", 8)` of the ASCII text before the first NUL.
pub fn nti(field: &[u8]) -> Option<i128> {
    let (&first, rest) = field.split_first()?;
    if first == 0x80 || first == 0xff {
        let mut n: i128 = 0;
        for &b in rest {
            n = (n << 8) | i128::from(b); // at most 11 bytes: fits
        }
        if first == 0xff {
            n -= 1i128 << (8 * rest.len());
        }
        return Some(n);
    }
    let text = nts(field);
    let text = trim_py_space(text);
    if text.is_empty() {
        return Some(0);
    }
    py_int(text, 8).ok()
}

pub(crate) enum PyIntError {
    Invalid,
    /// Python's int() also reads non-ASCII digits and spaces; ckpt does not.
    NonAscii,
}

/// What `str.strip()` and `int()` remove from ASCII text.
fn trim_py_space(s: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f);
    let start = s.iter().position(|b| !space(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !space(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Python's `int(text, base)` for base 8 or 10: surrounding whitespace, a sign, a `0o` prefix
/// (base 8), single underscores between digits (and after the prefix). Saturates at [`HUGE`].
pub(crate) fn py_int(text: &[u8], base: u32) -> Result<i128, PyIntError> {
    if !text.is_ascii() {
        return Err(PyIntError::NonAscii);
    }
    let s = trim_py_space(text);
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (s, prefixed) = match s {
        [b'0', b'o' | b'O', rest @ ..] if base == 8 => (rest, true),
        _ => (s, false),
    };
    let s = if prefixed { s.strip_prefix(b"_").unwrap_or(s) } else { s };
    if s.is_empty() || s.starts_with(b"_") || s.ends_with(b"_") || s.windows(2).any(|w| w == b"__") {
        return Err(PyIntError::Invalid);
    }
    let mut n: i128 = 0;
    for &c in s.iter().filter(|&&c| c != b'_') {
        let d = (c as char).to_digit(base).ok_or(PyIntError::Invalid)?;
        n = (n * i128::from(base) + i128::from(d)).min(HUGE);
    }
    Ok(if neg { -n } else { n })
}

/// A block anywhere in the file (on a 512-byte boundary) that parses as the header of a member
/// with data: what a tar reader other than tarfile could take for a member (one that ignores a
/// PAX size, skips a directory's size, or reads on past a bad header).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: Vec<u8>,
    pub header: usize,
    pub data: usize,
    pub size: usize,
}

/// Every header-like block whose data lies inside the file.
pub fn candidates(bytes: &[u8]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for header in (0..bytes.len().saturating_sub(BLOCK - 1)).step_by(BLOCK) {
        let Ok(h) = parse_header(&bytes[header..header + BLOCK]) else {
            continue;
        };
        let data = header + BLOCK;
        let size = usize::try_from(h.size).ok().filter(|&s| s <= bytes.len() - data);
        if let (true, Some(size)) = (Kind::of(h.flag).has_data(), size) {
            out.push(Candidate {
                name: h.name,
                header,
                data,
                size,
            });
        }
    }
    out
}

/// Where the bytes torch reads for one name come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// `size` bytes of the archive at `offset`.
    Data { offset: usize, size: usize },
    /// torch.load raises (a KeyError, an IsADirectoryError ...) or hangs (a fifo): it reads
    /// nothing more of the archive.
    Fails(String),
    /// The bytes come from a file of the loading machine (a symbolic or hard link leading out
    /// of the extraction directory, a device node): what is unpickled is not in the archive.
    Host(String),
}

/// The archive's members, looked up the way tarfile does.
pub struct Archive<'a> {
    pub members: &'a [Member],
}

impl<'a> Archive<'a> {
    /// `getmember(name)`: the last member of exactly that name (trailing slashes dropped).
    pub fn getmember(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('/').as_bytes();
        self.members.iter().rposition(|m| m.name == name)
    }

    /// `_find_link_target`: a symlink's target is searched in the whole archive, relative to
    /// the link's directory; a hard link's among the members before it; names compared after
    /// `os.path.normpath`.
    fn link_target(&self, index: usize) -> Option<usize> {
        let m = &self.members[index];
        let (wanted, limit) = if m.kind == Kind::SymLink {
            let dir = dirname(&m.name);
            let mut joined = Vec::new();
            for part in [dir, m.linkname.as_slice()].into_iter().filter(|p| !p.is_empty()) {
                if !joined.is_empty() {
                    joined.push(b'/');
                }
                joined.extend_from_slice(part);
            }
            (joined, self.members.len())
        } else {
            (m.linkname.clone(), index)
        };
        let wanted = normpath(&wanted);
        self.members[..limit].iter().rposition(|c| normpath(&c.name) == wanted)
    }

    /// The bytes of `extractfile(name)`: a link yields its target's file object; a member
    /// without data (directory, device, fifo) yields None, which torch's unpickler refuses.
    pub fn extractfile(&self, name: &str) -> Resolved {
        let Some(mut index) = self.getmember(name) else {
            return Resolved::Fails(format!("the archive has no member '{name}' (KeyError)"));
        };
        for _ in 0..MAX_LINK_HOPS {
            let m = &self.members[index];
            match m.kind {
                Kind::Regular | Kind::Unknown => return self.data(index),
                Kind::HardLink | Kind::SymLink => match self.link_target(index) {
                    Some(t) => index = t,
                    None => {
                        return Resolved::Fails(format!("'{}': link target not found (KeyError)", m.display_name()))
                    }
                },
                _ => {
                    return Resolved::Fails(format!(
                        "'{}' is not a file: extractfile returns None",
                        m.display_name()
                    ))
                }
            }
        }
        Resolved::Fails(format!("'{name}': a cycle of links"))
    }

    /// The bytes torch reads back after `extract(name, path=tmpdir)` into a fresh directory
    /// (the default, fully trusting filter of Python <= 3.13). `extracted` names what was
    /// extracted there before ("storages" when "tensors" is extracted) and its bytes.
    pub fn extract(&self, name: &str, extracted: Option<(&str, &Resolved)>) -> Resolved {
        match self.getmember(name) {
            Some(index) => self.extract_member(index, extracted),
            None => Resolved::Fails(format!("the archive has no member '{name}' (KeyError)")),
        }
    }

    /// `_extract_member`, then torch's `open()` of the extracted path.
    fn extract_member(&self, index: usize, extracted: Option<(&str, &Resolved)>) -> Resolved {
        let m = &self.members[index];
        let name = m.display_name();
        match m.kind {
            Kind::Regular | Kind::Unknown => self.data(index),
            Kind::Dir => Resolved::Fails(format!("'{name}' is a directory: torch cannot open it")),
            Kind::Fifo => Resolved::Fails(format!("'{name}' is a fifo: torch.load would wait on it forever")),
            Kind::Device => Resolved::Host(format!("'{name}' is a device node: torch.load reads the device")),
            Kind::SymLink => self.extract_symlink(m, extracted),
            Kind::HardLink => self.extract_hard_link(index, extracted),
        }
    }

    /// `os.symlink(linkname, tmpdir/name)`, then open() follows it: a path outside the
    /// extraction directory is the loading machine's; inside it, only what was extracted before
    /// exists.
    fn extract_symlink(&self, m: &Member, extracted: Option<(&str, &Resolved)>) -> Resolved {
        let link = String::from_utf8_lossy(&m.linkname);
        if escapes(&m.linkname) {
            return Resolved::Host(format!(
                "'{}' is a symbolic link to '{link}': torch.load reads that path on the loading machine",
                m.display_name()
            ));
        }
        match extracted {
            Some((done, bytes)) if names_file(&m.linkname, done) => bytes.clone(),
            _ => Resolved::Fails(format!(
                "'{}' is a dangling symbolic link to '{link}'",
                m.display_name()
            )),
        }
    }

    /// `makelink` for a hard link: `os.link(tmpdir/linkname)` when that path exists (a host
    /// path when the link name is absolute or climbs out; the file extracted before when it
    /// names it), else the linked member is extracted in its place.
    fn extract_hard_link(&self, index: usize, extracted: Option<(&str, &Resolved)>) -> Resolved {
        let m = &self.members[index];
        if escapes(&m.linkname) {
            return Resolved::Host(format!(
                "'{}' is a hard link to '{}', outside the extraction directory: torch.load reads the loading machine's file if it exists",
                m.display_name(),
                String::from_utf8_lossy(&m.linkname)
            ));
        }
        if let Some((done, bytes)) = extracted {
            if names_file(&m.linkname, done) {
                return bytes.clone();
            }
        }
        let mut at = index;
        for _ in 0..MAX_LINK_HOPS {
            let Some(t) = self.link_target(at) else {
                return Resolved::Fails(format!("'{}': link target not found", m.display_name()));
            };
            // A linked member that is itself a hard link has no `_link_target`: tarfile's
            // AttributeError is caught and the search goes on from it.
            match self.members[t].kind {
                Kind::HardLink => at = t,
                _ => return self.extract_member(t, extracted),
            }
        }
        Resolved::Fails(format!("'{}': a cycle of links", m.display_name()))
    }

    fn data(&self, index: usize) -> Resolved {
        let m = &self.members[index];
        // open() proved every data-carrying member lies inside the file.
        Resolved::Data {
            offset: m.data,
            size: m.size as usize,
        }
    }
}

/// A link name that leads out of the extraction directory (absolute, or climbing above it).
fn escapes(link: &[u8]) -> bool {
    let norm = normpath(link);
    link.starts_with(b"/") || norm == b".." || norm.starts_with(b"../")
}

/// Whether `tmpdir/link` is the regular file `done` extracted there. The kernel resolves the
/// path as written: `./storages` is it, `storages/.` or `a/../storages` are not.
fn names_file(link: &[u8], done: &str) -> bool {
    let mut parts: Vec<&[u8]> = link.split(|&b| b == b'/').collect();
    let last = parts.pop().unwrap_or_default();
    last == done.as_bytes() && parts.iter().all(|p| matches!(*p, b"" | b"."))
}

fn dirname(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => {
            let head = &name[..=i];
            // os.path.dirname keeps a root of slashes, else drops the trailing ones.
            if head.iter().all(|&b| b == b'/') {
                head
            } else {
                let mut end = head.len();
                while end > 0 && head[end - 1] == b'/' {
                    end -= 1;
                }
                &head[..end]
            }
        }
        None => b"",
    }
}

/// `os.path.normpath` (POSIX).
pub fn normpath(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let leading = path.iter().take_while(|&&b| b == b'/').count();
    // POSIX keeps exactly two leading slashes, and folds three or more into one.
    let root: &[u8] = match leading {
        0 => b"",
        2 => b"//",
        _ => b"/",
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if !parts.is_empty() && parts.last() != Some(&&b".."[..]) => {
                parts.pop();
            }
            b".." if !root.is_empty() => {}
            _ => parts.push(part),
        }
    }
    let mut out = root.to_vec();
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_python_int() {
        assert_eq!(nti(b"0000644\0"), Some(0o644));
        assert_eq!(nti(b"  644 \0\0"), Some(0o644));
        assert_eq!(nti(b"\0\0\0\0"), Some(0));
        assert_eq!(nti(b"0o_1_7\0"), Some(0o17));
        assert_eq!(nti(b"-17\0"), Some(-0o17));
        assert_eq!(nti(b"89\0"), None);
        assert_eq!(nti(b"1__7\0"), None);
        assert_eq!(nti(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(nti(&[0xff, 0xff, 0xff, 0xff]), Some(-1));
    }

    #[test]
    fn normpath_like_posixpath() {
        assert_eq!(normpath(b"a/./b//c/../d"), b"a/b/d");
        assert_eq!(normpath(b"../a/.."), b"..");
        assert_eq!(normpath(b"/../a"), b"/a");
        assert_eq!(normpath(b"//a"), b"//a");
        assert_eq!(normpath(b"///a"), b"/a");
        assert_eq!(normpath(b"a/.."), b".");
    }

    #[test]
    fn garbage_is_not_tar() {
        assert!(matches!(open(&[1u8; 1024]), Ok(Open::NotTar(_))));
        assert!(matches!(open(&[1u8; 100]), Ok(Open::NotTar(_))));
        // A block of zeros first: an empty archive, which tarfile opens.
        assert!(matches!(open(&[0u8; 1024]), Ok(Open::Tar(m)) if m.is_empty()));
    }
}
