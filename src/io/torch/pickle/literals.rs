//! The byte reader of the pickle machine and the opcodes that push a literal (ints, floats,
//! strings, bytes, None, booleans). Every length is checked against the remaining input first.

use super::{Machine, R, V};

impl<'a> Machine<'a> {
    pub(super) fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let rest = self.b.len() - self.pos;
        if n > rest {
            return Err(format!("needs {n} more bytes, the input has {rest}"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> R<usize> {
        Ok(self.take(1)?[0] as usize)
    }
    pub(super) fn u16(&mut self) -> R<usize> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    pub(super) fn u32(&mut self) -> R<usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes(s.try_into().unwrap()) as usize)
    }
    pub(super) fn u64(&mut self) -> R<usize> {
        let s = self.take(8)?;
        usize::try_from(u64::from_le_bytes(s.try_into().unwrap())).map_err(|e| e.to_string())
    }
    pub(super) fn line(&mut self) -> R<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a text line without its newline")?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| "a text line that is not UTF-8".to_string())
    }
    pub(super) fn text(&mut self, n: usize) -> R<V> {
        let s = self.take(n)?;
        let s = std::str::from_utf8(s).map_err(|_| "a string that is not valid UTF-8")?;
        Ok(V::Str(s.into()))
    }

    /// The value a literal opcode pushes, `None` when `op` is not a literal opcode.
    pub(super) fn literal(&mut self, op: u8) -> R<Option<V>> {
        Ok(Some(match op {
            b'N' => V::None,
            0x88 => V::Bool(true),
            0x89 => V::Bool(false),
            b'J' => {
                let s = self.take(4)?;
                V::Int(i32::from_le_bytes(s.try_into().unwrap()) as i128)
            }
            b'K' => V::Int(self.u8()? as i128),
            b'M' => V::Int(self.u16()? as i128),
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement
                let n = if op == 0x8a { self.u8()? } else { self.u32()? };
                if n > 16 {
                    return Err(format!(
                        "an integer of {n} bytes (at most 16 are supported)"
                    ));
                }
                let s = self.take(n)?;
                let fill = if s.last().is_some_and(|&b| b & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                let mut buf = [fill; 16];
                buf[..n].copy_from_slice(s);
                V::Int(i128::from_le_bytes(buf))
            }
            b'G' => {
                let s = self.take(8)?;
                V::Float(f64::from_be_bytes(s.try_into().unwrap()))
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = match op {
                    b'X' | b'T' => self.u32()?,
                    0x8d => self.u64()?,
                    _ => self.u8()?,
                };
                self.text(n)?
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => self.u32()?,
                    b'C' => self.u8()?,
                    _ => self.u64()?,
                };
                V::Bytes(self.take(n)?.into())
            }
            _ => return Ok(None),
        }))
    }
}
