//! Why a pickle could not be read. Every variant names the byte offset it concerns, so a user can
//! find the spot with `python -m pickletools` or a hex dump.

/// An error of the pickle machine. `offset` is the byte offset of the opcode at fault, except for
/// [`PickleError::Truncated`] and [`PickleError::Unterminated`], where it is where the missing
/// argument bytes begin, and [`PickleError::NoStop`], where it is the end of the input.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PickleError {
    #[error("pickle truncated at byte {offset}: {opcode} needs {needed} bytes, {remaining} remain")]
    Truncated {
        opcode: &'static str,
        offset: u64,
        needed: u64,
        remaining: u64,
    },

    #[error("pickle truncated at byte {offset}: the {opcode} argument has no terminating newline")]
    Unterminated { opcode: &'static str, offset: u64 },

    #[error("unknown pickle opcode 0x{byte:02x} at byte {offset}")]
    UnknownOpcode { byte: u8, offset: u64 },

    #[error("pickle stack underflow at byte {offset}: {opcode} needs more values than there are above the last MARK")]
    StackUnderflow { opcode: &'static str, offset: u64 },

    #[error("pickle has no open MARK for {opcode} at byte {offset}")]
    NoMark { opcode: &'static str, offset: u64 },

    #[error("pickle memo has no entry {key} (read at byte {offset})")]
    MemoMissing { key: u64, offset: u64 },

    #[error("pickle exceeds the limit of {limit} {what} at byte {offset}")]
    LimitExceeded {
        what: &'static str,
        limit: u64,
        offset: u64,
    },

    #[error("invalid pickle at byte {offset}: {opcode}: {what}")]
    Invalid {
        opcode: &'static str,
        what: String,
        offset: u64,
    },

    #[error("unsupported pickle opcode {opcode} at byte {offset}: out-of-band buffers (protocol 5) are not available")]
    Unsupported { opcode: &'static str, offset: u64 },

    #[error("pickle ended at byte {offset} without a STOP opcode")]
    NoStop { offset: u64 },
}

impl PickleError {
    /// The byte offset the error concerns (see the type's documentation).
    pub fn offset(&self) -> u64 {
        match self {
            PickleError::Truncated { offset, .. }
            | PickleError::Unterminated { offset, .. }
            | PickleError::UnknownOpcode { offset, .. }
            | PickleError::StackUnderflow { offset, .. }
            | PickleError::NoMark { offset, .. }
            | PickleError::MemoMissing { offset, .. }
            | PickleError::LimitExceeded { offset, .. }
            | PickleError::Invalid { offset, .. }
            | PickleError::Unsupported { offset, .. }
            | PickleError::NoStop { offset } => *offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PickleError;

    #[test]
    fn messages_name_the_offset_and_the_shortfall() {
        let e = PickleError::Truncated {
            opcode: "BINUNICODE",
            offset: 1234,
            needed: 50,
            remaining: 3,
        };
        assert_eq!(
            e.to_string(),
            "pickle truncated at byte 1234: BINUNICODE needs 50 bytes, 3 remain"
        );
        assert_eq!(e.offset(), 1234);
        let e = PickleError::UnknownOpcode { byte: 0xff, offset: 7 };
        assert_eq!(e.to_string(), "unknown pickle opcode 0xff at byte 7");
        let e = PickleError::LimitExceeded {
            what: "open MARKs",
            limit: 100_000,
            offset: 100_000,
        };
        assert_eq!(
            e.to_string(),
            "pickle exceeds the limit of 100000 open MARKs at byte 100000"
        );
    }
}
