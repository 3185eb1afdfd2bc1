//! Safe labels: the names of tasks, concepts, benchmarks and cells.
//!
//! Labels travel far from the file that introduced them: into file names
//! (`cells/<concept>_<task>.bin`), Megatron blend strings, sbatch scripts, trainer command
//! lines and reports. A label with a space, a quote, a newline, a `$(…)` or a `..` would break
//! or subvert every one of them, so labels are restricted where they enter (`prepare`, for
//! the raw `task` field and benchmark file names) and checked again wherever a manifest is read
//! back: 1 to [`MAX_LABEL_LEN`] characters from `A-Z a-z 0-9 . _ -`, starting with a letter or
//! a digit, without `..`.

/// The longest label accepted.
pub const MAX_LABEL_LEN: usize = 64;

/// What a label may be, for error messages.
pub const LABEL_RULE: &str =
    "1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..'";

/// A label outside [`LABEL_RULE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a safe label; expected {LABEL_RULE}")]
pub struct LabelError {
    /// The label found (shown escaped, so control characters stay visible).
    pub value: String,
}

/// Whether `s` is a safe label (see the module documentation).
pub fn is_safe_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !s.contains("..")
}

/// Checks that `s` is a safe label.
pub fn check_label(s: &str) -> Result<(), LabelError> {
    if is_safe_label(s) {
        Ok(())
    } else {
        Err(LabelError {
            value: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_labels_pass() {
        for ok in ["ocr", "c00", "vqa-v2", "Doc_VQA.test", "9", &"a".repeat(64)] {
            assert!(is_safe_label(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ocr",
            "a b",
            "a/b",
            "..",
            "a..b",
            ".hidden",
            "-x",
            "_x",
            "$(touch PWNED)",
            "`id`",
            "a;b",
            "a\nb",
            "\"q\"",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_safe_label(bad), "{bad:?}");
        }
        let e = check_label("a\nb").unwrap_err().to_string();
        assert!(e.contains("\"a\\nb\"") && e.contains("A-Z a-z 0-9"), "{e}");
    }
}
