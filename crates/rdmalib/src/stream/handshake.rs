//! The connection handshake of the stream providers, as bytes: what the active side sends
//! (`MAGIC, version u16, len u16, private data`) and what the passive side answers
//! (`MAGIC, version u16, status u8, len u16, private data`), little-endian. Both parsers take
//! what has arrived so far and say whether it is complete, so a listener can collect a
//! handshake over several non-blocking reads.

use super::wire::{MAGIC, VERSION};
use crate::error::{Error, Result};
use crate::types::{MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA};

/// Answer: the request is accepted; frames follow.
pub(super) const ACCEPT: u8 = 0;
/// Answer: the request is rejected, with private data.
pub(super) const REJECT: u8 = 1;
/// Answer: the peer speaks another version.
pub(super) const BAD_VERSION: u8 = 2;

const REQUEST_HEAD: usize = 8;
const REPLY_HEAD: usize = 9;

/// A request's bytes.
pub(super) fn request(private_data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REQUEST_HEAD + private_data.len());
    msg.extend_from_slice(&MAGIC);
    msg.extend_from_slice(&VERSION.to_le_bytes());
    msg.extend_from_slice(&(private_data.len() as u16).to_le_bytes());
    msg.extend_from_slice(private_data);
    msg
}

/// A reply's bytes.
pub(super) fn reply(status: u8, private_data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REPLY_HEAD + private_data.len());
    msg.extend_from_slice(&MAGIC);
    msg.extend_from_slice(&VERSION.to_le_bytes());
    msg.push(status);
    msg.extend_from_slice(&(private_data.len() as u16).to_le_bytes());
    msg.extend_from_slice(private_data);
    msg
}

/// What a request's bytes say so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request<'a> {
    /// More bytes are needed; at most this many.
    Incomplete(usize),
    /// The whole request: its private data (as sent, unpadded).
    Complete(&'a [u8]),
    /// The peer speaks another version: answer [`BAD_VERSION`] and drop it.
    OtherVersion(u16),
}

/// Parses the start of a request. An error means the bytes are not a request at all.
pub(super) fn parse_request(bytes: &[u8]) -> Result<Request<'_>> {
    let Some(head) = bytes.get(..REQUEST_HEAD) else {
        check_magic(bytes)?;
        return Ok(Request::Incomplete(REQUEST_HEAD - bytes.len()));
    };
    check_magic(head)?;
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != VERSION {
        return Ok(Request::OtherVersion(version));
    }
    let len = u16::from_le_bytes([head[6], head[7]]) as usize;
    if len > MAX_CONNECT_PRIVATE_DATA {
        return Err(Error::Protocol(format!(
            "a connection request with {len} bytes of private data"
        )));
    }
    let total = REQUEST_HEAD + len;
    match bytes.get(REQUEST_HEAD..total) {
        Some(data) if bytes.len() == total => Ok(Request::Complete(data)),
        Some(_) => Err(Error::Protocol(
            "bytes after a connection request, before the answer".into(),
        )),
        None => Ok(Request::Incomplete(total - bytes.len())),
    }
}

/// A complete reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reply<'a> {
    /// Whether the peer accepted.
    pub accepted: bool,
    /// Its private data (as sent, unpadded).
    pub private_data: &'a [u8],
}

/// Parses a reply's head (`bytes` of at least [`reply_len`]`(head)` bytes).
pub(super) fn parse_reply(bytes: &[u8]) -> Result<Reply<'_>> {
    let len = reply_len(bytes)?;
    let data = bytes
        .get(REPLY_HEAD..len)
        .ok_or_else(|| Error::Protocol("a truncated connection answer".into()))?;
    Ok(Reply {
        accepted: bytes[6] == ACCEPT,
        private_data: data,
    })
}

/// The length of the whole reply whose head is `head` ([`REPLY_HEAD`] bytes or more).
pub(super) fn reply_len(head: &[u8]) -> Result<usize> {
    let head = head
        .get(..REPLY_HEAD)
        .ok_or_else(|| Error::Protocol("a truncated connection answer".into()))?;
    check_magic(head)?;
    let version = u16::from_le_bytes([head[4], head[5]]);
    let len = u16::from_le_bytes([head[7], head[8]]) as usize;
    let max = match head[6] {
        ACCEPT => MAX_ACCEPT_PRIVATE_DATA,
        REJECT => MAX_REJECT_PRIVATE_DATA,
        BAD_VERSION => {
            return Err(Error::Protocol(format!(
                "the peer speaks stream-provider protocol version {version}, this build speaks {VERSION}"
            )));
        }
        other => {
            return Err(Error::Protocol(format!(
                "the peer answered with unknown status {other}"
            )));
        }
    };
    if len > max {
        return Err(Error::Protocol(format!(
            "the peer answered with {len} bytes of private data; at most {max} are allowed"
        )));
    }
    Ok(REPLY_HEAD + len)
}

/// Bytes of a reply's head, which [`reply_len`] needs.
pub(super) const fn reply_head_len() -> usize {
    REPLY_HEAD
}

fn check_magic(bytes: &[u8]) -> Result<()> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(Error::Protocol(
            "the peer does not speak the rdmalib stream protocol".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_byte_by_byte() {
        let bytes = request(b"hello");
        for cut in 0..bytes.len() {
            assert!(
                matches!(parse_request(&bytes[..cut]), Ok(Request::Incomplete(n)) if n > 0),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_request(&bytes).unwrap(), Request::Complete(b"hello"));
    }

    #[test]
    fn strangers_and_other_versions_are_told_apart() {
        assert!(parse_request(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse_request(b"G").is_err());
        let mut other = request(b"");
        other[4] = 9;
        assert_eq!(parse_request(&other).unwrap(), Request::OtherVersion(9));
        let mut long = request(&[0; MAX_CONNECT_PRIVATE_DATA]);
        long[6] = 57;
        assert!(parse_request(&long).is_err());
    }

    #[test]
    fn replies_round_trip_and_are_bounded() {
        let r = reply(REJECT, b"go away");
        assert_eq!(reply_len(&r).unwrap(), r.len());
        assert_eq!(
            parse_reply(&r).unwrap(),
            Reply {
                accepted: false,
                private_data: b"go away"
            }
        );
        let mut too_long = reply(ACCEPT, b"");
        too_long[7..9].copy_from_slice(&1000u16.to_le_bytes());
        assert!(reply_len(&too_long).is_err());
        assert!(reply_len(&reply(BAD_VERSION, b"")).is_err());
    }
}
