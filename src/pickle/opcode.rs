//! The pickle opcodes of protocols 0 to 5, as CPython's Lib/pickletools.py documents them.
//!
//! One table drives the enum, the byte decoding and the pickletools names, so the three can never
//! disagree. The argument layout of each opcode is noted next to it (pickletools' `arg` names).

macro_rules! opcodes {
    ($($(#[$doc:meta])* $variant:ident = $byte:literal, $name:literal;)*) => {
        /// One pickle opcode; `as u8` gives its byte in the stream.
        #[repr(u8)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Opcode {
            $($(#[$doc])* $variant = $byte,)*
        }

        impl Opcode {
            /// Every opcode, in the order of the table below.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant,)*];

            /// The name pickletools gives the opcode (`"SHORT_BINUNICODE"`), used in messages.
            pub fn name(self) -> &'static str {
                match self {
                    $(Opcode::$variant => $name,)*
                }
            }
        }

        impl TryFrom<u8> for Opcode {
            /// A byte that is no opcode of protocols 0-5 is handed back.
            type Error = u8;

            fn try_from(byte: u8) -> Result<Self, u8> {
                match byte {
                    $($byte => Ok(Opcode::$variant),)*
                    other => Err(other),
                }
            }
        }
    };
}

opcodes! {
    // Stack and mark handling.
    /// pickletools: MARK, no arg; pushes a markobject.
    Mark = b'(', "MARK";
    /// pickletools: STOP, no arg; the stack top is the result.
    Stop = b'.', "STOP";
    /// pickletools: POP, no arg; discards the stack top (or the topmost mark).
    Pop = b'0', "POP";
    /// pickletools: POP_MARK, no arg; discards everything down to and including the topmost mark.
    PopMark = b'1', "POP_MARK";
    /// pickletools: DUP, no arg.
    Dup = b'2', "DUP";

    // Numbers.
    /// pickletools: FLOAT, arg floatnl (decimal text line).
    Float = b'F', "FLOAT";
    /// pickletools: INT, arg decimalnl_short ("00"/"01" are False/True).
    Int = b'I', "INT";
    /// pickletools: BININT, arg int4 (signed little-endian).
    BinInt = b'J', "BININT";
    /// pickletools: BININT1, arg uint1.
    BinInt1 = b'K', "BININT1";
    /// pickletools: LONG, arg decimalnl_long ("123L").
    Long = b'L', "LONG";
    /// pickletools: BININT2, arg uint2 (little-endian).
    BinInt2 = b'M', "BININT2";
    /// pickletools: NONE, no arg.
    None = b'N', "NONE";

    // Persistent ids and calls.
    /// pickletools: PERSID, arg stringnl_noescape.
    PersId = b'P', "PERSID";
    /// pickletools: BINPERSID, no arg; the id is popped.
    BinPersId = b'Q', "BINPERSID";
    /// pickletools: REDUCE, no arg; pops args then callable.
    Reduce = b'R', "REDUCE";

    // Strings.
    /// pickletools: STRING, arg stringnl (quoted Python 2 repr).
    String = b'S', "STRING";
    /// pickletools: BINSTRING, arg string4 (signed length).
    BinString = b'T', "BINSTRING";
    /// pickletools: SHORT_BINSTRING, arg string1.
    ShortBinString = b'U', "SHORT_BINSTRING";
    /// pickletools: UNICODE, arg unicodestringnl (raw-unicode-escape).
    Unicode = b'V', "UNICODE";
    /// pickletools: BINUNICODE, arg unicodestring4 (UTF-8).
    BinUnicode = b'X', "BINUNICODE";

    // Containers and object building.
    /// pickletools: APPEND, no arg.
    Append = b'a', "APPEND";
    /// pickletools: BUILD, no arg; pops state, updates the object below it.
    Build = b'b', "BUILD";
    /// pickletools: GLOBAL, arg stringnl_noescape_pair (module line, name line).
    Global = b'c', "GLOBAL";
    /// pickletools: DICT, no arg; key/value pairs above the topmost mark.
    Dict = b'd', "DICT";
    /// pickletools: EMPTY_DICT, no arg.
    EmptyDict = b'}', "EMPTY_DICT";
    /// pickletools: APPENDS, no arg; items above the topmost mark.
    Appends = b'e', "APPENDS";
    /// pickletools: GET, arg decimalnl_short.
    Get = b'g', "GET";
    /// pickletools: BINGET, arg uint1.
    BinGet = b'h', "BINGET";
    /// pickletools: INST, arg stringnl_noescape_pair; args above the topmost mark.
    Inst = b'i', "INST";
    /// pickletools: LONG_BINGET, arg uint4.
    LongBinGet = b'j', "LONG_BINGET";
    /// pickletools: LIST, no arg; items above the topmost mark.
    List = b'l', "LIST";
    /// pickletools: EMPTY_LIST, no arg.
    EmptyList = b']', "EMPTY_LIST";
    /// pickletools: OBJ, no arg; class and args above the topmost mark.
    Obj = b'o', "OBJ";
    /// pickletools: PUT, arg decimalnl_short.
    Put = b'p', "PUT";
    /// pickletools: BINPUT, arg uint1.
    BinPut = b'q', "BINPUT";
    /// pickletools: LONG_BINPUT, arg uint4.
    LongBinPut = b'r', "LONG_BINPUT";
    /// pickletools: SETITEM, no arg; pops value then key.
    SetItem = b's', "SETITEM";
    /// pickletools: TUPLE, no arg; items above the topmost mark.
    Tuple = b't', "TUPLE";
    /// pickletools: EMPTY_TUPLE, no arg.
    EmptyTuple = b')', "EMPTY_TUPLE";
    /// pickletools: SETITEMS, no arg; key/value pairs above the topmost mark.
    SetItems = b'u', "SETITEMS";
    /// pickletools: BINFLOAT, arg float8 (big-endian IEEE 754).
    BinFloat = b'G', "BINFLOAT";

    // Protocol 2.
    /// pickletools: PROTO, arg uint1.
    Proto = 0x80, "PROTO";
    /// pickletools: NEWOBJ, no arg; pops args then class.
    NewObj = 0x81, "NEWOBJ";
    /// pickletools: EXT1, arg uint1 (extension registry code).
    Ext1 = 0x82, "EXT1";
    /// pickletools: EXT2, arg uint2.
    Ext2 = 0x83, "EXT2";
    /// pickletools: EXT4, arg int4.
    Ext4 = 0x84, "EXT4";
    /// pickletools: TUPLE1, no arg.
    Tuple1 = 0x85, "TUPLE1";
    /// pickletools: TUPLE2, no arg.
    Tuple2 = 0x86, "TUPLE2";
    /// pickletools: TUPLE3, no arg.
    Tuple3 = 0x87, "TUPLE3";
    /// pickletools: NEWTRUE, no arg.
    NewTrue = 0x88, "NEWTRUE";
    /// pickletools: NEWFALSE, no arg.
    NewFalse = 0x89, "NEWFALSE";
    /// pickletools: LONG1, arg long1 (uint1 length, two's complement little-endian).
    Long1 = 0x8a, "LONG1";
    /// pickletools: LONG4, arg long4 (int4 length, two's complement little-endian).
    Long4 = 0x8b, "LONG4";

    // Protocol 3.
    /// pickletools: BINBYTES, arg bytes4 (uint4 length).
    BinBytes = b'B', "BINBYTES";
    /// pickletools: SHORT_BINBYTES, arg bytes1.
    ShortBinBytes = b'C', "SHORT_BINBYTES";

    // Protocol 4.
    /// pickletools: SHORT_BINUNICODE, arg unicodestring1.
    ShortBinUnicode = 0x8c, "SHORT_BINUNICODE";
    /// pickletools: BINUNICODE8, arg unicodestring8.
    BinUnicode8 = 0x8d, "BINUNICODE8";
    /// pickletools: BINBYTES8, arg bytes8.
    BinBytes8 = 0x8e, "BINBYTES8";
    /// pickletools: EMPTY_SET, no arg.
    EmptySet = 0x8f, "EMPTY_SET";
    /// pickletools: ADDITEMS, no arg; items above the topmost mark.
    AddItems = 0x90, "ADDITEMS";
    /// pickletools: FROZENSET, no arg; items above the topmost mark.
    FrozenSet = 0x91, "FROZENSET";
    /// pickletools: NEWOBJ_EX, no arg; pops kwargs, args, class.
    NewObjEx = 0x92, "NEWOBJ_EX";
    /// pickletools: STACK_GLOBAL, no arg; pops name then module.
    StackGlobal = 0x93, "STACK_GLOBAL";
    /// pickletools: MEMOIZE, no arg; memo key is the memo's current length.
    Memoize = 0x94, "MEMOIZE";
    /// pickletools: FRAME, arg uint8 (length of the frame that follows).
    Frame = 0x95, "FRAME";

    // Protocol 5.
    /// pickletools: BYTEARRAY8, arg bytearray8.
    ByteArray8 = 0x96, "BYTEARRAY8";
    /// pickletools: NEXT_BUFFER, no arg; takes the next out-of-band buffer.
    NextBuffer = 0x97, "NEXT_BUFFER";
    /// pickletools: READONLY_BUFFER, no arg.
    ReadonlyBuffer = 0x98, "READONLY_BUFFER";
}

#[cfg(test)]
mod tests {
    use super::Opcode;
    use std::collections::HashSet;

    #[test]
    fn every_byte_maps_to_its_opcode_or_is_rejected() {
        let mut accepted = 0;
        for byte in 0..=255u8 {
            match Opcode::try_from(byte) {
                Ok(op) => {
                    assert_eq!(op as u8, byte, "{} decodes from the wrong byte", op.name());
                    accepted += 1;
                }
                Err(rejected) => assert_eq!(rejected, byte),
            }
        }
        // pickletools.opcodes has 68 entries for protocols 0-5.
        assert_eq!(accepted, 68);
        assert_eq!(Opcode::ALL.len(), 68);
    }

    #[test]
    fn names_and_bytes_are_unique() {
        let names: HashSet<_> = Opcode::ALL.iter().map(|op| op.name()).collect();
        let bytes: HashSet<_> = Opcode::ALL.iter().map(|&op| op as u8).collect();
        assert_eq!(names.len(), Opcode::ALL.len());
        assert_eq!(bytes.len(), Opcode::ALL.len());
        for &op in Opcode::ALL {
            assert_eq!(Opcode::try_from(op as u8), Ok(op));
        }
    }

    #[test]
    fn names_follow_pickletools() {
        assert_eq!(Opcode::ShortBinUnicode.name(), "SHORT_BINUNICODE");
        assert_eq!(Opcode::try_from(0x80).map(Opcode::name), Ok("PROTO"));
        assert_eq!(Opcode::try_from(b'(').map(Opcode::name), Ok("MARK"));
        assert_eq!(Opcode::try_from(0x99), Err(0x99));
    }
}
