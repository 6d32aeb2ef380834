//! Fixed-layout little-endian records, declared once with [`record!`] and [`wire_enum!`]: a
//! record is its fields in declaration order, each encoded by its type's [`Field`] impl, so no
//! record has a codec of its own.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Largest control message; every record fits (each declaration asserts it at compile time).
pub const MAX_MESSAGE_LEN: usize = 512;
/// Largest human-readable text in a record (longer text is cut on a character boundary).
pub const MAX_TEXT_LEN: usize = 200;

/// Errors decoding protocol records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The record ended early.
    #[error("truncated {0} record")]
    Truncated(&'static str),
    /// The peer is not an rFaaS component.
    #[error("the peer does not speak the rFaaS protocol")]
    BadMagic,
    /// The peer speaks another version.
    #[error(
        "protocol version mismatch: the peer speaks version {peer}, this build speaks {}",
        crate::control::PROTOCOL_VERSION
    )]
    Version {
        /// The peer's version.
        peer: u16,
    },
    /// A field has a value the protocol does not define.
    #[error("invalid {field} value {value} in a {record} record")]
    Invalid {
        /// The record.
        record: &'static str,
        /// The field.
        field: &'static str,
        /// The raw value.
        value: u64,
    },
}

/// Appends fields to a record.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The encoded record.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields of one record; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    record: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `data` as a record called `record` (for error messages).
    pub fn new(data: &'a [u8], record: &'static str) -> Self {
        Reader { data, record }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.data.len() < n {
            return Err(ProtocolError::Truncated(self.record));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// The error for a field whose raw value the protocol does not define.
    pub fn invalid(&self, field: &'static str, value: u64) -> ProtocolError {
        ProtocolError::Invalid {
            record: self.record,
            field,
            value,
        }
    }
}

/// A value with a fixed little-endian encoding (or, for text, a length-prefixed one).
pub trait Field: Sized {
    /// The most bytes the value encodes to.
    const MAX_LEN: usize;
    /// Appends the value.
    fn put(&self, w: &mut Writer);
    /// Reads the value.
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError>;
}

macro_rules! int_fields {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            const MAX_LEN: usize = size_of::<$ty>();
            fn put(&self, w: &mut Writer) {
                w.bytes(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
                Ok(<$ty>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
int_fields!(u8, u16, u32, u64, i32);

/// Text: a u16 length and UTF-8 bytes, cut at [`MAX_TEXT_LEN`].
impl Field for String {
    const MAX_LEN: usize = 2 + MAX_TEXT_LEN;
    fn put(&self, w: &mut Writer) {
        let mut end = self.len().min(MAX_TEXT_LEN);
        while !self.is_char_boundary(end) {
            end -= 1;
        }
        (end as u16).put(w);
        w.bytes(&self.as_bytes()[..end]);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let len = u16::get(r)? as usize;
        Ok(String::from_utf8_lossy(r.take(len)?).into_owned())
    }
}

/// An IPv4 or IPv6 address (as IPv6, IPv4-mapped) and a port.
impl Field for SocketAddr {
    const MAX_LEN: usize = 18;
    fn put(&self, w: &mut Writer) {
        let ip = match self.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        w.bytes(&ip.octets());
        self.port().put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let v6 = Ipv6Addr::from(r.array::<16>()?);
        let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        Ok(SocketAddr::new(ip, u16::get(r)?))
    }
}

/// Raw bytes of a fixed length.
impl<const N: usize> Field for [u8; N] {
    const MAX_LEN: usize = N;
    fn put(&self, w: &mut Writer) {
        w.bytes(self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        r.array()
    }
}

/// One byte, 0 or 1.
impl Field for bool {
    const MAX_LEN: usize = 1;
    fn put(&self, w: &mut Writer) {
        u8::from(*self).put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match u8::get(r)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(r.invalid("flag", v.into())),
        }
    }
}

/// A presence byte (0 or 1), then the value if present.
impl<T: Field> Field for Option<T> {
    const MAX_LEN: usize = 1 + T::MAX_LEN;
    fn put(&self, w: &mut Writer) {
        match self {
            None => 0u8.put(w),
            Some(v) => {
                1u8.put(w);
                v.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match u8::get(r)? {
            0 => Ok(None),
            1 => T::get(r).map(Some),
            v => Err(r.invalid("presence", v.into())),
        }
    }
}

/// A record: its fields in order. [`record!`] implements it.
pub trait Record: Sized {
    /// The record's name in error messages.
    const NAME: &'static str;
    /// Appends the fields.
    fn put_fields(&self, w: &mut Writer);
    /// Reads the fields.
    fn get_fields(r: &mut Reader<'_>) -> Result<Self, ProtocolError>;

    /// The record's bytes.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.put_fields(&mut w);
        w.finish()
    }

    /// Reads a record; bytes after it are ignored (RDMA transports pad private data).
    fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        Self::get_fields(&mut Reader::new(data, Self::NAME))
    }
}

/// Declares a record: a struct whose fields are [`Field`]s, encoded in declaration order
/// after an optional preamble (a [`Field`] that encodes to constant bytes and checks them).
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($label:literal $(, preamble $preamble:ty)?) {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $crate::record::Record for $name {
            const NAME: &'static str = $label;

            fn put_fields(&self, w: &mut $crate::record::Writer) {
                $(<$preamble as $crate::record::Field>::put(&<$preamble>::default(), w);)?
                $($crate::record::Field::put(&self.$field, w);)*
            }

            fn get_fields(
                r: &mut $crate::record::Reader<'_>,
            ) -> Result<Self, $crate::record::ProtocolError> {
                $(<$preamble as $crate::record::Field>::get(r)?;)?
                Ok($name {
                    $($field: $crate::record::Field::get(r)?,)*
                })
            }
        }

        const _: () = assert!(
            0 $(+ <$preamble as $crate::record::Field>::MAX_LEN)?
                $(+ <$ty as $crate::record::Field>::MAX_LEN)* <= $crate::record::MAX_MESSAGE_LEN,
            concat!("a ", $label, " record does not fit a control message")
        );
    };
}
pub(crate) use record;

/// Declares a fieldless enum with the raw values of the wire, its conversion from a raw
/// value and its [`Field`] impl (an invalid value names the enum as the field).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident ($label:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $value:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $value,)*
        }

        impl $name {
            /// The variant with raw value `value`, if there is one.
            pub fn from_raw(value: $repr) -> Option<$name> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl $crate::record::Field for $name {
            const MAX_LEN: usize = size_of::<$repr>();
            fn put(&self, w: &mut $crate::record::Writer) {
                $crate::record::Field::put(&(*self as $repr), w);
            }
            fn get(r: &mut $crate::record::Reader<'_>) -> Result<Self, $crate::record::ProtocolError> {
                let raw = <$repr as $crate::record::Field>::get(r)?;
                $name::from_raw(raw).ok_or_else(|| r.invalid($label, raw.into()))
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        let mut w = Writer::default();
        "é".repeat(MAX_TEXT_LEN).put(&mut w);
        let bytes = w.finish();
        let back = String::get(&mut Reader::new(&bytes, "test")).unwrap();
        assert!(back.len() <= MAX_TEXT_LEN && back.chars().all(|c| c == 'é'));
    }

    #[test]
    fn addresses_and_options_round_trip() {
        for addr in ["10.1.2.3:10005", "[fe80::1]:4791"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut w = Writer::default();
            Some(addr).put(&mut w);
            None::<u32>.put(&mut w);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes, "test");
            assert_eq!(Option::<SocketAddr>::get(&mut r).unwrap(), Some(addr));
            assert_eq!(Option::<u32>::get(&mut r).unwrap(), None);
            assert_eq!(r.take(1), Err(ProtocolError::Truncated("test")));
        }
    }
}
