//! GPT-2's `bytes_to_unicode` table: every byte as a printable char, so a BPE token is a string.
//!
//! The 188 bytes that are printable in Latin-1 (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for
//! themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen) become U+0100.. in byte
//! order, so the space `0x20` is `Ġ` (U+0120) and the newline `0x0A` is `Ċ` (U+010A).
//! The same table as OpenAI's `encoder.py` and `transformers`' `bytes_to_unicode()`.

/// Whether byte `b` stands for itself (printable Latin-1, not space, not soft hyphen).
const fn is_printable(b: usize) -> bool {
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
}

/// `BYTE_TO_CHAR[b]`: the char that byte `b` is written as in vocab and merges files.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut next = 0u32; // the non-printable bytes take U+0100, U+0101, ... in byte order
    let mut b = 0;
    while b < 256 {
        table[b] = if is_printable(b) {
            b as u8 as char
        } else {
            next += 1;
            match char::from_u32(255 + next) {
                Some(c) => c,
                None => panic!("U+0100..U+0144 are chars"),
            }
        };
        b += 1;
    }
    table
};

/// Inverse of [`BYTE_TO_CHAR`] for the chars below U+0144 (the largest it uses is U+0143).
const CHAR_TO_BYTE: [i16; 0x144] = {
    let mut table = [-1i16; 0x144];
    let mut b = 0;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
};

/// The byte that `c` stands for, or `None` for a char outside the table.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE
        .get(c as usize)
        .and_then(|&b| u8::try_from(b).ok())
}

/// The 256 bytes in GPT-2's id order (ids 0..256 of `encoder.json`): the printable bytes
/// ascending, then the others ascending, i.e. ordered by [`BYTE_TO_CHAR`].
pub(crate) fn bytes_in_gpt2_order() -> impl Iterator<Item = u8> {
    (0..=255u8)
        .filter(|&b| is_printable(b as usize))
        .chain((0..=255u8).filter(|&b| !is_printable(b as usize)))
}

/// The bytes a vocab token stands for: each char through the table; a char outside it (an added
/// token such as `<pad>` with a non-table char) contributes its own UTF-8, like the Hugging Face
/// `ByteLevel` decoder.
pub(crate) fn token_to_bytes(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The vocab-file spelling of `bytes`: each byte through [`BYTE_TO_CHAR`].
pub(crate) fn bytes_to_token(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_gpt2() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'\t' as usize], 'ĉ');
        assert_eq!(BYTE_TO_CHAR[b'!' as usize], '!');
        assert_eq!(BYTE_TO_CHAR[0], 'Ā');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń'); // soft hyphen, the last non-printable
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c), "{c:?} twice");
            assert!(!c.is_whitespace() && !c.is_control(), "{c:?}");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('Ņ'), None);
        assert_eq!(char_to_byte('€'), None);
        let order: Vec<u8> = bytes_in_gpt2_order().collect();
        assert_eq!(
            (order.len(), order[0], order[187], order[188]),
            (256, b'!', 255, 0)
        );
    }
}
