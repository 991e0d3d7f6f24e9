//! Component and heart names: the one rule for them, and [`Name`], a name that passed it.
//!
//! A name becomes a file name (a heart in the hearts directory, a problem file in the run
//! directory) and the value of `WATCHKEEPER_COMPONENT` for a repair, so the rule is strict:
//! `[A-Za-z0-9._-]`, 1 to [`MAX_NAME_LEN`] bytes, not `.` or `..`. The config, the hearts
//! directory scan and the repair launcher all check names with [`check_name`].
//!
//! Invariants: a [`Name`] is only built by [`Name::new`], so it always satisfies the rule;
//! it is ASCII (hence UTF-8) and stored inline, without allocation.

use core::fmt;

use crate::limits::MAX_NAME_LEN;

// The length message below spells the limit out, so that it can be a `&'static str`.
const _: () = assert!(MAX_NAME_LEN == 32, "update NameError::Length's message");

/// Why bytes are not a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_LEN`] bytes.
    Length,
    /// `.` or `..`, which are not files of their own.
    Dots,
    /// A byte other than a letter, a digit, `.`, `_` or `-`.
    Characters,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Length => "a name must be 1 to 32 bytes long",
            NameError::Dots => "a name cannot be . or ..",
            NameError::Characters => "a name may only contain letters, digits, '.', '_' and '-'",
        })
    }
}

/// Checks the rule: `[A-Za-z0-9._-]`, 1 to [`MAX_NAME_LEN`] bytes, not `.` or `..`.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dots);
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    {
        return Err(NameError::Characters);
    }
    Ok(())
}

/// A component or heart name that satisfies the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(heapless::String<MAX_NAME_LEN>);

impl Name {
    pub fn new(name: &[u8]) -> Result<Name, NameError> {
        check_name(name)?;
        let mut text = heapless::String::new();
        for &byte in name {
            // Cannot fail: the rule bounds the length by the capacity.
            text.push(char::from(byte)).map_err(|_| NameError::Length)?;
        }
        Ok(Name(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name in its fixed-capacity buffer, for holders that must not allocate.
    pub fn text(&self) -> &heapless::String<MAX_NAME_LEN> {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_names_and_says_why_others_are_not() {
        for good in [&b"a"[..], b"web-1.service_2", &[b'x'; MAX_NAME_LEN]] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
            assert_eq!(Name::new(good).unwrap().as_str().as_bytes(), good);
        }
        assert_eq!(check_name(b""), Err(NameError::Length));
        assert_eq!(
            check_name(&[b'x'; MAX_NAME_LEN + 1]),
            Err(NameError::Length)
        );
        assert_eq!(check_name(b"."), Err(NameError::Dots));
        assert_eq!(check_name(b".."), Err(NameError::Dots));
        for bad in [&b"a b"[..], b"a/b", b"\xc3\xa9", b"a\0"] {
            assert_eq!(Name::new(bad), Err(NameError::Characters), "{bad:?}");
        }
        assert_eq!(
            NameError::Length.to_string(),
            "a name must be 1 to 32 bytes long"
        );
    }
}
