//! Trainer command templates (`[search.trainer] command`, `--trainer-command`) without shell
//! injection. A template is split into words with POSIX shell-word rules (the `shell-words`
//! crate) when the configuration is checked, and each attempt fills the placeholders
//! (`{trial_dir}`, `{mixture}`, `{blend}`, `{seed}`, and at a fidelity `{preset}`, `{steps}`)
//! one word at a time, in a single pass: a value — a path with spaces, a label holding
//! `$(…)` — is always part of exactly one argument and is never read by a shell. The words
//! are executed directly.
//!
//! A user who wants a shell (pipes, `&&`, redirections, `$VAR`) says so (`shell = true`,
//! `--trainer-shell`): the template then runs through `sh -c`, and every substituted value is
//! shell-quoted first. Without it, unquoted shell syntax in the template is refused rather
//! than passed on as literal arguments.

use crate::slurm::sbatch::shell_quote;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 6] = ["trial_dir", "mixture", "blend", "seed", "preset", "steps"];

/// Characters that mean shell syntax when they appear unquoted in a template.
const SHELL_SYNTAX: &[char] = &['|', '&', ';', '<', '>', '(', ')', '$', '`', '\n'];

/// A template that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing to run.
    #[error("the command is empty")]
    Empty,
    /// Unbalanced quotes or a trailing backslash.
    #[error("cannot split into arguments ({0}): check the quotes")]
    Unsplittable(String),
    /// Shell syntax in a command that runs without a shell.
    #[error(
        "unquoted {0:?} is shell syntax, but the command runs without a shell (each word is one \
         argument); quote it to pass it literally, or set shell = true (--trainer-shell) to run \
         the command through sh -c"
    )]
    ShellSyntax(char),
}

/// Splits a template into words (shell-word rules: quotes, backslashes, `#` comments) and
/// refuses unquoted shell syntax (see [`CommandError`]).
pub fn split(template: &str) -> Result<Vec<String>, CommandError> {
    if let Some(c) = unquoted_shell_syntax(template) {
        return Err(CommandError::ShellSyntax(c));
    }
    let words =
        shell_words::split(template).map_err(|e| CommandError::Unsplittable(e.to_string()))?;
    if words.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(words)
}

/// Checks a template for the mode it runs in: split without a shell, or (with `shell`) only
/// that it is not empty.
pub fn check(template: &str, shell: bool) -> Result<(), CommandError> {
    if shell {
        if template.trim().is_empty() {
            return Err(CommandError::Empty);
        }
        return Ok(());
    }
    split(template).map(|_| ())
}

/// The first shell-syntax character outside quotes, or a word starting with an unquoted `~`.
fn unquoted_shell_syntax(s: &str) -> Option<char> {
    #[derive(PartialEq)]
    enum Q {
        No,
        Single,
        Double,
    }
    let mut q = Q::No;
    let mut escaped = false;
    let mut word_start = true;
    for c in s.chars() {
        if escaped {
            escaped = false;
            word_start = false;
            continue;
        }
        match q {
            Q::Single if c == '\'' => q = Q::No,
            Q::Single => {}
            Q::Double if c == '"' => q = Q::No,
            Q::Double if c == '\\' => escaped = true,
            Q::Double if c == '$' || c == '`' => return Some(c),
            Q::Double => {}
            Q::No => match c {
                '\\' => escaped = true,
                '\'' => q = Q::Single,
                '"' => q = Q::Double,
                '~' if word_start => return Some(c),
                c if SHELL_SYNTAX.contains(&c) => return Some(c),
                _ => {}
            },
        }
        word_start = q == Q::No && c.is_whitespace();
    }
    None
}

/// The values of a template's placeholders for one attempt.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Each placeholder's value as one string (`("trial_dir", "/…/a1")`).
    pub text: Vec<(&'static str, String)>,
    /// Placeholders that, written as a whole word, stand for several arguments: `{blend}` is
    /// Megatron's `--data-path W1 P1 W2 P2 …`, one argument per weight and per path.
    pub words: Vec<(&'static str, Vec<String>)>,
}

impl Values {
    /// The arguments a whole word `{name}` stands for, when `name` is a list placeholder.
    fn list(&self, word: &str) -> Option<&[String]> {
        let name = word.strip_prefix('{')?.strip_suffix('}')?;
        self.words
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| w.as_slice())
    }

    /// A list placeholder's arguments as shell words joined by spaces (`quote` applied to each).
    fn joined(&self, name: &str, quote: impl Fn(&str) -> String) -> Option<String> {
        let (_, w) = self.words.iter().find(|(n, _)| *n == name)?;
        Some(w.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" "))
    }
}

/// Fills `{name}` placeholders of `text` in one pass (a substituted value is never scanned
/// again): literal runs go through `lit`, a placeholder named in `values` becomes
/// `val(name, value)`; unknown `{…}` stay as they are (as literal text).
pub fn fill_with(
    text: &str,
    values: &[(&str, String)],
    lit: impl Fn(&str) -> String,
    val: impl Fn(&str, &str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run_start = 0;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let hit = rest.starts_with('{').then(|| {
            values.iter().find(|(name, _)| {
                rest[1..].starts_with(name) && rest[1 + name.len()..].starts_with('}')
            })
        });
        if let Some(Some((name, value))) = hit {
            if run_start < i {
                out.push_str(&lit(&text[run_start..i]));
            }
            out.push_str(&val(name, value));
            i += name.len() + 2;
            run_start = i;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    if run_start < text.len() {
        out.push_str(&lit(&text[run_start..]));
    }
    out
}

/// The program and arguments of one attempt: the template's words with the placeholders
/// filled in (each word stays one argument; a whole-word list placeholder such as `{blend}`
/// becomes its arguments), or with `shell`, `sh -c TEMPLATE` with every value shell-quoted
/// (a list placeholder as its quoted arguments).
pub fn argv(template: &str, shell: bool, values: &Values) -> Result<Vec<String>, CommandError> {
    if shell {
        check(template, true)?;
        let text = fill_with(template, &values.text, str::to_string, |name, v| {
            values
                .joined(name, shell_quote)
                .unwrap_or_else(|| shell_quote(v))
        });
        return Ok(vec!["sh".into(), "-c".into(), text]);
    }
    let mut argv = Vec::new();
    for w in split(template)? {
        match values.list(&w) {
            Some(list) => argv.extend_from_slice(list),
            None => argv.push(fill_with(&w, &values.text, str::to_string, |_, v| {
                v.to_string()
            })),
        }
    }
    Ok(argv)
}

/// `'…'` around any word (so a first word is never a shell keyword or an assignment).
fn quote_always(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The template as one line of shell text (for a Slurm job script), whose values are given
/// as shell text already (`"$MIXATLAS_TRIAL_DIR"`, a number; a list placeholder as one
/// entry, e.g. `$MIXATLAS_BLEND` unquoted, split by the shell with globbing off): each word
/// of a template run without a shell becomes one quoted shell word (the program's always
/// quoted, so it cannot be a keyword or an assignment); with `shell`, the filled template
/// runs as `sh -c '…'`, as it does locally.
pub fn shell_line(template: &str, shell: bool, values: &Values) -> Result<String, CommandError> {
    if shell {
        check(template, true)?;
        let val = |name: &str, v: &str| {
            values
                .joined(name, str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        let text = fill_with(template, &values.text, str::to_string, val);
        return Ok(format!("sh -c {}", shell_quote(&text)));
    }
    let mut noglob = false;
    let mut line = Vec::new();
    for (i, w) in split(template)?.iter().enumerate() {
        if let Some(list) = values.list(w) {
            noglob = true;
            line.push(list.join(" "));
            continue;
        }
        let lit = |l: &str| {
            if i == 0 {
                quote_always(l)
            } else {
                shell_quote(l)
            }
        };
        let s = fill_with(w, &values.text, lit, |_, v| v.to_string());
        line.push(if s.is_empty() { "''".into() } else { s });
    }
    let line = line.join(" ");
    Ok(if noglob {
        format!("set -f; {line}")
    } else {
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals() -> Values {
        Values {
            text: vec![
                ("trial_dir", "/tmp/sp ace/$(touch x);`id`/a1".into()),
                ("seed", "7".into()),
                ("blend", "0.5 /c/{seed} 0.5 /c/b c".into()),
            ],
            words: vec![(
                "blend",
                vec![
                    "0.5".into(),
                    "/c/{seed}".into(),
                    "0.5".into(),
                    "/c/b c".into(),
                ],
            )],
        }
    }

    #[test]
    fn words_are_filled_one_argument_each_in_one_pass() {
        let a = argv(
            "python3 'my trainer.py' --out={trial_dir} --data-path {blend} --b={blend} --seed {seed} {preset}",
            false,
            &vals(),
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "python3",
                "my trainer.py",
                "--out=/tmp/sp ace/$(touch x);`id`/a1",
                "--data-path",
                "0.5",
                "/c/{seed}",
                "0.5",
                "/c/b c",
                "--b=0.5 /c/{seed} 0.5 /c/b c",
                "--seed",
                "7",
                "{preset}",
            ]
        );
    }

    #[test]
    fn unsplittable_and_shell_syntax_are_refused() {
        assert!(matches!(
            split("python3 'oops"),
            Err(CommandError::Unsplittable(_))
        ));
        assert_eq!(split("  "), Err(CommandError::Empty));
        assert_eq!(split("a && b"), Err(CommandError::ShellSyntax('&')));
        assert_eq!(split("a $HOME"), Err(CommandError::ShellSyntax('$')));
        assert_eq!(split("a \"$HOME\""), Err(CommandError::ShellSyntax('$')));
        assert_eq!(split("~/t.py"), Err(CommandError::ShellSyntax('~')));
        assert_eq!(split("a\nb"), Err(CommandError::ShellSyntax('\n')));
        assert_eq!(
            split("a '&&' \\; b~c 'x$y'").unwrap(),
            ["a", "&&", ";", "b~c", "x$y"]
        );
        assert!(check("a | b", true).is_ok());
    }

    #[test]
    fn the_shell_mode_quotes_every_value() {
        let a = argv("echo {trial_dir} > {trial_dir}/f {blend}", true, &vals()).unwrap();
        assert_eq!(a[..2], ["sh", "-c"]);
        let q = "'/tmp/sp ace/$(touch x);`id`/a1'";
        assert_eq!(
            a[2],
            format!("echo {q} > {q}/f 0.5 '/c/{{seed}}' 0.5 '/c/b c'")
        );
    }

    #[test]
    fn shell_lines_quote_literals_and_keep_values() {
        let v = Values {
            text: vec![
                ("trial_dir", "\"$MIXATLAS_TRIAL_DIR\"".to_string()),
                ("seed", "7".to_string()),
                ("blend", "\"$MIXATLAS_BLEND\"".to_string()),
            ],
            words: vec![("blend", vec!["$MIXATLAS_BLEND".to_string()])],
        };
        let l = shell_line("FOO=1 --out={trial_dir}/x 'a b' {seed} ''", false, &v).unwrap();
        assert_eq!(l, "'FOO=1' --out=\"$MIXATLAS_TRIAL_DIR\"/x 'a b' 7 ''");
        let l = shell_line("t --data-path {blend} --b={blend}", false, &v).unwrap();
        assert_eq!(
            l,
            "set -f; 't' --data-path $MIXATLAS_BLEND --b=\"$MIXATLAS_BLEND\""
        );
        let l = shell_line("cat {trial_dir} | wc", true, &v).unwrap();
        assert_eq!(l, "sh -c 'cat \"$MIXATLAS_TRIAL_DIR\" | wc'");
    }
}
