//! KMIP TTLV, the binary encoding (KMIP 1.x specification, section 9.1):
//! every item is `tag (3 bytes) ‖ type (1) ‖ length (4, big-endian) ‖ value`,
//! the value padded with zeros to a multiple of 8 bytes.
//!
//! Only `std` and `thiserror` are used here: the fuzz target includes this file
//! by `#[path]`.
//!
//! The decoder is strict on purpose: lengths of fixed-size types must be
//! exact, padding must be zero, Booleans 0 or 1, text UTF-8, structures
//! exactly filled. So every accepted input has one encoding, and
//! `encode(decode(x)) == x` (the fuzz target checks it). It never panics,
//! bounds the nesting depth and the total size, and never allocates more
//! than the input holds.

/// Largest message we read or write: KMIP requests and responses for our
/// operations are a few hundred bytes.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Deepest structure nesting accepted (KMIP messages nest about 6 deep).
pub const MAX_DEPTH: usize = 32;
/// Bytes before a value: tag (3), type (1), length (4).
pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TtlvError {
    #[error("truncated item at byte {at}")]
    Truncated { at: usize },
    #[error("unknown item type {item_type:#04x} at byte {at}")]
    UnknownType { item_type: u8, at: usize },
    #[error("length {len} is invalid for a {item_type} at byte {at}")]
    BadLength { item_type: &'static str, len: u32, at: usize },
    #[error("non-zero padding at byte {at}")]
    BadPadding { at: usize },
    #[error("Boolean value is neither 0 nor 1 at byte {at}")]
    BadBoolean { at: usize },
    #[error("Text String is not UTF-8 at byte {at}")]
    BadUtf8 { at: usize },
    #[error("structures nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error("{count} bytes after the message")]
    Trailing { count: usize },
    #[error("tag {tag:#x} does not fit in 3 bytes")]
    TagOutOfRange { tag: u32 },
}

/// The TTLV item types (the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
}

impl ItemType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Structure,
            0x02 => Self::Integer,
            0x03 => Self::LongInteger,
            0x04 => Self::BigInteger,
            0x05 => Self::Enumeration,
            0x06 => Self::Boolean,
            0x07 => Self::TextString,
            0x08 => Self::ByteString,
            0x09 => Self::DateTime,
            0x0A => Self::Interval,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Structure => "Structure",
            Self::Integer => "Integer",
            Self::LongInteger => "Long Integer",
            Self::BigInteger => "Big Integer",
            Self::Enumeration => "Enumeration",
            Self::Boolean => "Boolean",
            Self::TextString => "Text String",
            Self::ByteString => "Byte String",
            Self::DateTime => "Date-Time",
            Self::Interval => "Interval",
        }
    }
}

/// A value of one of the ten TTLV types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Big-endian two's complement, a non-zero multiple of 8 bytes (the
    /// encoding sign-extends to that length; we keep the bytes as they are).
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// POSIX time, seconds.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Value::Structure(_) => ItemType::Structure,
            Value::Integer(_) => ItemType::Integer,
            Value::LongInteger(_) => ItemType::LongInteger,
            Value::BigInteger(_) => ItemType::BigInteger,
            Value::Enumeration(_) => ItemType::Enumeration,
            Value::Boolean(_) => ItemType::Boolean,
            Value::TextString(_) => ItemType::TextString,
            Value::ByteString(_) => ItemType::ByteString,
            Value::DateTime(_) => ItemType::DateTime,
            Value::Interval(_) => ItemType::Interval,
        }
    }
}

/// One TTLV item: a tag (24 bits) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: u32,
    pub value: Value,
}

/// Builders, one per type.
impl Ttlv {
    pub fn new(tag: u32, value: Value) -> Self {
        Self { tag, value }
    }
    pub fn structure(tag: u32, children: Vec<Ttlv>) -> Self {
        Self::new(tag, Value::Structure(children))
    }
    pub fn integer(tag: u32, value: i32) -> Self {
        Self::new(tag, Value::Integer(value))
    }
    pub fn long_integer(tag: u32, value: i64) -> Self {
        Self::new(tag, Value::LongInteger(value))
    }
    pub fn big_integer(tag: u32, twos_complement: Vec<u8>) -> Self {
        Self::new(tag, Value::BigInteger(twos_complement))
    }
    pub fn enumeration(tag: u32, value: u32) -> Self {
        Self::new(tag, Value::Enumeration(value))
    }
    pub fn boolean(tag: u32, value: bool) -> Self {
        Self::new(tag, Value::Boolean(value))
    }
    pub fn text(tag: u32, value: impl Into<String>) -> Self {
        Self::new(tag, Value::TextString(value.into()))
    }
    pub fn bytes(tag: u32, value: impl Into<Vec<u8>>) -> Self {
        Self::new(tag, Value::ByteString(value.into()))
    }
    pub fn date_time(tag: u32, seconds: i64) -> Self {
        Self::new(tag, Value::DateTime(seconds))
    }
    pub fn interval(tag: u32, seconds: u32) -> Self {
        Self::new(tag, Value::Interval(seconds))
    }
}

/// Finding children and reading values; `None` when the item is of another
/// type, so a parser can chain them.
impl Ttlv {
    /// The items of a structure; empty for any other type.
    pub fn children(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(children) => children,
            _ => &[],
        }
    }
    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.children().iter().find(|c| c.tag == tag)
    }
    /// Every child with `tag`, in order.
    pub fn children_with(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.children().iter().filter(move |c| c.tag == tag)
    }
    pub fn as_integer(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_long_integer(&self) -> Option<i64> {
        match self.value {
            Value::LongInteger(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_boolean(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_date_time(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }
}

const fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Encoding.
impl Ttlv {
    /// Bytes of the value before padding (the length field).
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(children) => children.iter().map(Ttlv::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(v) | Value::ByteString(v) => v.len(),
            Value::TextString(v) => v.len(),
        }
    }

    /// Bytes of the whole item, padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + padded(self.value_len())
    }

    /// The TTLV bytes. Allocates once, exactly (no reallocation leaves copies
    /// of a secret value behind in freed memory).
    pub fn encode(&self) -> Result<Vec<u8>, TtlvError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(TtlvError::TooLarge { len });
        }
        let mut out = Vec::with_capacity(len);
        self.encode_into(&mut out, 0)?;
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>, depth: usize) -> Result<(), TtlvError> {
        if depth >= MAX_DEPTH {
            return Err(TtlvError::TooDeep);
        }
        if self.tag > 0xFF_FFFF {
            return Err(TtlvError::TagOutOfRange { tag: self.tag });
        }
        let item_type = self.value.item_type();
        let len = self.value_len();
        if let Value::BigInteger(v) = &self.value
            && (v.is_empty() || !v.len().is_multiple_of(8))
        {
            return Err(TtlvError::BadLength { item_type: item_type.name(), len: len as u32, at: out.len() });
        }
        // encode() checked the total size, so every length fits in 32 bits.
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(item_type as u8);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        match &self.value {
            Value::Structure(children) => {
                for child in children {
                    child.encode_into(out, depth + 1)?;
                }
            }
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
            Value::BigInteger(v) | Value::ByteString(v) => out.extend_from_slice(v),
        }
        out.resize(out.len() + padded(len) - len, 0);
        Ok(())
    }
}

/// Decodes exactly one item that spans all of `input`.
pub fn decode(input: &[u8]) -> Result<Ttlv, TtlvError> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(TtlvError::TooLarge { len: input.len() });
    }
    let mut reader = Reader { input, pos: 0 };
    let item = reader.item(0)?;
    match input.len() - reader.pos {
        0 => Ok(item),
        count => Err(TtlvError::Trailing { count }),
    }
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TtlvError> {
        let at = self.pos;
        let end = at.checked_add(n).filter(|&end| end <= self.input.len()).ok_or(TtlvError::Truncated { at })?;
        self.pos = end;
        Ok(&self.input[at..end])
    }

    fn item(&mut self, depth: usize) -> Result<Ttlv, TtlvError> {
        if depth >= MAX_DEPTH {
            return Err(TtlvError::TooDeep);
        }
        let at = self.pos;
        let header = self.take(HEADER_LEN)?;
        let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let item_type =
            ItemType::from_byte(header[3]).ok_or(TtlvError::UnknownType { item_type: header[3], at: at + 3 })?;
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        check_length(item_type, len, at)?;
        // `len` fits in usize on every platform we build for (>= 32 bits),
        // and take() refuses anything longer than the input.
        let len = len as usize;
        let value = if item_type == ItemType::Structure {
            self.structure(len, depth)?
        } else {
            let bytes = self.take(len)?;
            let padding = self.take(padded(len) - len)?;
            if padding.iter().any(|&b| b != 0) {
                return Err(TtlvError::BadPadding { at: self.pos - padding.len() });
            }
            primitive(item_type, bytes, at + HEADER_LEN)?
        };
        Ok(Ttlv { tag, value })
    }

    fn structure(&mut self, len: usize, depth: usize) -> Result<Value, TtlvError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(TtlvError::Truncated { at: self.pos })?;
        // Children read from the structure's own bytes only: one that runs
        // past its end is truncated.
        let mut inner = Reader { input: &self.input[..end], pos: self.pos };
        let mut children = Vec::new();
        while inner.pos < end {
            children.push(inner.item(depth + 1)?);
        }
        self.pos = end;
        Ok(Value::Structure(children))
    }
}

/// The length field must be the one the type defines (structures: whole
/// 8-byte items; Big Integers: a non-zero multiple of 8).
fn check_length(item_type: ItemType, len: u32, at: usize) -> Result<(), TtlvError> {
    let ok = match item_type {
        ItemType::Structure => len.is_multiple_of(8),
        ItemType::Integer | ItemType::Enumeration | ItemType::Interval => len == 4,
        ItemType::LongInteger | ItemType::Boolean | ItemType::DateTime => len == 8,
        ItemType::BigInteger => len != 0 && len.is_multiple_of(8),
        ItemType::TextString | ItemType::ByteString => true,
    };
    if ok { Ok(()) } else { Err(TtlvError::BadLength { item_type: item_type.name(), len, at }) }
}

fn primitive(item_type: ItemType, bytes: &[u8], at: usize) -> Result<Value, TtlvError> {
    // check_length() fixed the lengths of the fixed-size types.
    let be4 = || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let be8 = || {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        i64::from_be_bytes(b)
    };
    Ok(match item_type {
        ItemType::Integer => Value::Integer(be4() as i32),
        ItemType::Enumeration => Value::Enumeration(be4()),
        ItemType::Interval => Value::Interval(be4()),
        ItemType::LongInteger => Value::LongInteger(be8()),
        ItemType::DateTime => Value::DateTime(be8()),
        ItemType::Boolean => match be8() {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return Err(TtlvError::BadBoolean { at }),
        },
        ItemType::BigInteger => Value::BigInteger(bytes.to_vec()),
        ItemType::ByteString => Value::ByteString(bytes.to_vec()),
        ItemType::TextString => {
            Value::TextString(std::str::from_utf8(bytes).map_err(|_| TtlvError::BadUtf8 { at })?.to_owned())
        }
        ItemType::Structure => unreachable!("structures are read by Reader::structure"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the spec's notation: hex bytes, spaces and `|` separators.
    fn spec(hex: &str) -> Vec<u8> {
        let digits: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
    }

    /// Encodes `item`, compares with the spec bytes, and decodes them back.
    fn check(item: Ttlv, expected: &str) {
        let expected = spec(expected);
        assert_eq!(item.encode().unwrap(), expected, "{item:?}");
        assert_eq!(decode(&expected).unwrap(), item);
    }

    // The examples of KMIP 1.2/1.4 section 9.1.2 "Examples", all with tag
    // 0x420020 (Compromise Date).
    const T: u32 = 0x42_0020;

    #[test]
    fn spec_integer() {
        check(Ttlv::integer(T, 8), "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00");
    }

    #[test]
    fn spec_long_integer() {
        check(Ttlv::long_integer(T, 123_456_789_000_000_000), "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00");
    }

    #[test]
    fn spec_big_integer() {
        // 1234567890000000000000000000, sign-extended to 16 bytes.
        let value = 1_234_567_890_000_000_000_000_000_000u128.to_be_bytes().to_vec();
        check(
            Ttlv::big_integer(T, value),
            "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
        );
    }

    #[test]
    fn spec_enumeration() {
        check(Ttlv::enumeration(T, 255), "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00");
    }

    #[test]
    fn spec_boolean() {
        check(Ttlv::boolean(T, true), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01");
    }

    #[test]
    fn spec_text_string() {
        check(
            Ttlv::text(T, "Hello World"),
            "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
        );
    }

    #[test]
    fn spec_byte_string() {
        check(Ttlv::bytes(T, vec![1, 2, 3]), "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00");
    }

    #[test]
    fn spec_date_time() {
        // Friday, March 14, 2008, 11:56:40 GMT.
        check(Ttlv::date_time(T, 1_205_495_800), "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8");
    }

    #[test]
    fn spec_interval() {
        check(Ttlv::interval(T, 10 * 24 * 3600), "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00");
    }

    #[test]
    fn spec_structure() {
        check(
            Ttlv::structure(T, vec![Ttlv::enumeration(0x42_0004, 254), Ttlv::integer(0x42_0005, 255)]),
            "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 \
             | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        );
    }

    #[test]
    fn empty_strings_and_structures_have_no_value_bytes() {
        check(Ttlv::text(T, ""), "42 00 20 | 07 | 00 00 00 00");
        check(Ttlv::bytes(T, vec![]), "42 00 20 | 08 | 00 00 00 00");
        check(Ttlv::structure(T, vec![]), "42 00 20 | 01 | 00 00 00 00");
        // Exactly 8 bytes: no padding.
        check(Ttlv::bytes(T, vec![9; 8]), "42 00 20 | 08 | 00 00 00 08 | 09 09 09 09 09 09 09 09");
    }

    #[test]
    fn negative_numbers_are_twos_complement() {
        check(Ttlv::integer(T, -1), "42 00 20 | 02 | 00 00 00 04 | FF FF FF FF 00 00 00 00");
        check(Ttlv::long_integer(T, -2), "42 00 20 | 03 | 00 00 00 08 | FF FF FF FF FF FF FF FE");
    }

    #[test]
    fn helpers_find_children() {
        let s = Ttlv::structure(T, vec![Ttlv::integer(1, 1), Ttlv::text(2, "a"), Ttlv::integer(1, 2)]);
        assert_eq!(s.child(2).and_then(Ttlv::as_text), Some("a"));
        assert_eq!(s.children_with(1).filter_map(Ttlv::as_integer).collect::<Vec<_>>(), vec![1, 2]);
        assert!(s.child(3).is_none());
        assert_eq!(s.child(1).and_then(Ttlv::as_text), None, "wrong type");
        assert!(Ttlv::integer(1, 1).children().is_empty());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[(&str, TtlvError)] = &[
            ("", TtlvError::Truncated { at: 0 }),
            ("42 00 20 | 02 | 00 00 00", TtlvError::Truncated { at: 0 }),
            ("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08", TtlvError::Truncated { at: 12 }),
            (
                "42 00 20 | 0B | 00 00 00 04 | 00 00 00 08 00 00 00 00",
                TtlvError::UnknownType { item_type: 0x0B, at: 3 },
            ),
            ("42 00 20 | 00 | 00 00 00 00", TtlvError::UnknownType { item_type: 0, at: 3 }),
            (
                "42 00 20 | 02 | 00 00 00 08 | 00 00 00 08 00 00 00 00",
                TtlvError::BadLength { item_type: "Integer", len: 8, at: 0 },
            ),
            (
                "42 00 20 | 06 | 00 00 00 04 | 00 00 00 01 00 00 00 00",
                TtlvError::BadLength { item_type: "Boolean", len: 4, at: 0 },
            ),
            ("42 00 20 | 04 | 00 00 00 00", TtlvError::BadLength { item_type: "Big Integer", len: 0, at: 0 }),
            (
                "42 00 20 | 04 | 00 00 00 04 | 00 00 00 01 00 00 00 00",
                TtlvError::BadLength { item_type: "Big Integer", len: 4, at: 0 },
            ),
            ("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 01 00", TtlvError::BadPadding { at: 12 }),
            ("42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 01", TtlvError::BadPadding { at: 11 }),
            ("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02", TtlvError::BadBoolean { at: 8 }),
            ("42 00 20 | 07 | 00 00 00 02 | C3 28 00 00 00 00 00 00", TtlvError::BadUtf8 { at: 8 }),
            ("42 00 20 | 01 | 00 00 00 04", TtlvError::BadLength { item_type: "Structure", len: 4, at: 0 }),
            // Declares 8 bytes of content but its only child takes 16.
            (
                "42 00 20 | 01 | 00 00 00 08 | 42 00 04 | 02 | 00 00 00 04 | 00 00 00 01 00 00 00 00",
                TtlvError::Truncated { at: 16 },
            ),
            // Declares more content than the input holds.
            ("42 00 20 | 01 | 00 00 00 10 | 42 00 04 | 01 | 00 00 00 00", TtlvError::Truncated { at: 8 }),
            // A length near u32::MAX must not overflow or allocate.
            ("42 00 20 | 08 | FF FF FF FF | 00", TtlvError::Truncated { at: 8 }),
            ("42 00 20 | 01 | FF FF FF F8", TtlvError::Truncated { at: 8 }),
            ("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00 | 00", TtlvError::Trailing { count: 1 }),
        ];
        for (hex, expected) in cases {
            assert_eq!(decode(&spec(hex)), Err(*expected), "{hex}");
        }
    }

    /// `levels` structures, each the only child of the previous.
    /// Built by hand: encode() itself refuses to go past MAX_DEPTH.
    fn nested(levels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for level in 0..levels {
            out.extend_from_slice(&spec("42 00 20 | 01"));
            out.extend_from_slice(&(((levels - level - 1) * 8) as u32).to_be_bytes());
        }
        out
    }

    #[test]
    fn nesting_depth_is_bounded() {
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH + 1)), Err(TtlvError::TooDeep));
        assert_eq!(decode(&nested(100_000)), Err(TtlvError::TooDeep), "no stack overflow");
        let mut deep = Ttlv::structure(T, vec![]);
        for _ in 0..MAX_DEPTH {
            deep = Ttlv::structure(T, vec![deep]);
        }
        assert_eq!(deep.encode(), Err(TtlvError::TooDeep));
    }

    #[test]
    fn size_is_bounded() {
        let big = vec![0u8; MAX_MESSAGE_LEN + 8];
        assert_eq!(decode(&big), Err(TtlvError::TooLarge { len: MAX_MESSAGE_LEN + 8 }));
        assert_eq!(
            Ttlv::bytes(T, vec![0; MAX_MESSAGE_LEN]).encode(),
            Err(TtlvError::TooLarge { len: MAX_MESSAGE_LEN + 8 })
        );
    }

    #[test]
    fn encoder_refuses_what_it_cannot_represent() {
        assert_eq!(Ttlv::integer(0x0100_0000, 1).encode(), Err(TtlvError::TagOutOfRange { tag: 0x0100_0000 }));
        assert!(matches!(Ttlv::big_integer(T, vec![1, 2, 3]).encode(), Err(TtlvError::BadLength { .. })));
    }

    #[test]
    fn every_type_round_trips_inside_a_structure() {
        let item = Ttlv::structure(
            0x42_0078,
            vec![
                Ttlv::integer(1, i32::MIN),
                Ttlv::long_integer(2, i64::MAX),
                Ttlv::big_integer(3, vec![0xFF; 16]),
                Ttlv::enumeration(4, u32::MAX),
                Ttlv::boolean(5, false),
                Ttlv::text(6, "sealgate:bücket"),
                Ttlv::bytes(7, (0..=40).collect::<Vec<u8>>()),
                Ttlv::date_time(8, -1),
                Ttlv::interval(9, 0),
                Ttlv::structure(10, vec![Ttlv::structure(11, vec![])]),
            ],
        );
        let bytes = item.encode().unwrap();
        assert_eq!(bytes.len(), item.encoded_len());
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes).unwrap(), item);
    }

    /// Replays the committed fuzz seeds (fuzz/corpus/ttlv) with the fuzz
    /// target's invariants, on stable: `make test` runs them.
    #[test]
    fn fuzz_corpus_keeps_the_invariants() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ttlv");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(item) = decode(&input) {
                let encoded = item.encode().unwrap();
                assert_eq!(encoded, input);
                assert_eq!(decode(&encoded).unwrap(), item);
            }
            count += 1;
        }
        assert!(count > 0, "the ttlv corpus is empty");
    }
}
