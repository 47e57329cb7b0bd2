//! What an export may hold: the name rule and the size limits, checked by the reader before
//! any arithmetic on the values (docs/export-format.md, "Limits"). Exports are shared files:
//! these bounds keep every shape, MAC and parameter count far from overflow and keep text
//! from the file inert wherever it is printed or generated into code.

use std::fmt;

/// Longest layer or model name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest channel count, height, width, kernel size, stride, padding, group count, output
/// feature count and class count.
pub const MAX_DIM: usize = 65_536;
/// Most values in one activation (the input, any layer's output, a linear layer's input)
/// and in one weight tensor: 2^31.
pub const MAX_VALUES: usize = 1 << 31;
/// Most parameters (weights and biases) in one export: 2^30, 4 GiB of f32.
pub const MAX_PARAMS: u64 = 1 << 30;
/// Most layers.
pub const MAX_LAYERS: usize = 4096;
/// Most values one layer reads (an add of many branches).
pub const MAX_LAYER_INPUTS: usize = 64;
/// Longest class name, in bytes.
pub const MAX_CLASS_NAME_LEN: usize = 256;
/// Largest `arch.json`, in bytes.
pub const MAX_ARCH_BYTES: u64 = 16 << 20;
/// Room for the safetensors header beyond the tensors' data, in bytes.
pub const MAX_WEIGHTS_HEADER_BYTES: u64 = 16 << 20;
/// Bounds of the normalisation: `|mean| <= MAX_ABS_MEAN`, `MIN_STD <= std <= MAX_STD`
/// (the host treats a channel with a smaller std as constant and writes 1).
pub const MAX_ABS_MEAN: f32 = 1e6;
pub const MIN_STD: f32 = 1e-6;
pub const MAX_STD: f32 = 1e6;

/// The name rule, as written in errors and docs.
pub const NAME_RULE: &str = "1 to 64 characters from A-Z a-z 0-9 _ . + -";

/// Why a name breaks the rule ([`NAME_RULE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { len: usize },
    BadChar { ch: char, position: usize },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "is empty"),
            NameError::TooLong { len } => write!(f, "is {len} bytes long"),
            NameError::BadChar { ch, position } => {
                write!(f, "holds {ch:?} at character {position}")
            }
        }?;
        write!(f, "; names must be {NAME_RULE}")
    }
}

impl std::error::Error for NameError {}

/// Checks a layer or model name against the one rule `[A-Za-z0-9_.+-]{1,64}`. Such a name
/// is safe in file names, comments of generated code, TOML and terminal output; anything
/// else (a newline, a quote, `*/`, escape sequences) could change what it is pasted into.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some((position, ch)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')))
    {
        return Err(NameError::BadChar { ch, position });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    Ok(())
}

/// Checks free text that is only ever shown, never generated into code (class names such as
/// "T-shirt/top"): at most `max_len` bytes, no control characters (which could rewrite a
/// terminal line or a log).
pub fn check_text(text: &str, max_len: usize) -> Result<(), String> {
    if text.len() > max_len {
        return Err(format!("is {} bytes long (at most {max_len})", text.len()));
    }
    if let Some((position, ch)) = text.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "holds the control character {ch:?} at character {position}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_rule() {
        for ok in [
            "conv1",
            "features.0",
            "s1b1.conv1",
            "vgg-small",
            "a+b",
            "X_9",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name(&"a".repeat(64)), Ok(()));
        assert_eq!(
            check_name(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(
            check_name("x\nfn evil() {}"),
            Err(NameError::BadChar {
                ch: '\n',
                position: 1
            })
        );
        for bad in [
            "a b",
            "a*/",
            "a/b",
            "\"",
            "é",
            "a\u{2028}",
            "a\r",
            "{x}",
            "a\u{1b}[2J",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let text = check_name("a*/b").unwrap_err().to_string();
        assert!(text.contains("'*'") && text.contains(NAME_RULE), "{text}");
        assert!(check_text("T-shirt/top", 256).is_ok());
        assert!(check_text("a\nb", 256).is_err());
        assert!(check_text(&"x".repeat(257), 256).is_err());
    }
}
