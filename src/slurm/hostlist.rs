//! Slurm hostlists: `gpu[01-03,07],cpu5` ⇄ `gpu01 gpu02 gpu03 gpu07 cpu5`.
//!
//! `SLURM_JOB_NODELIST` arrives compressed; the launcher needs the hosts one by one (the first
//! is the rendezvous host of a multi-node run). Expansion follows `scontrol show hostnames`:
//! commas inside brackets separate ranges, a range keeps the width of its lower bound
//! (`[08-10]` → `08 09 10`, `[8-10]` → `8 9 10`), several bracket groups in one name expand as
//! a product in reading order (`rack[1-2]-node[01-02]` → `rack1-node01 rack1-node02
//! rack2-node01 rack2-node02`). Compression is the inverse `scontrol show hostlist` applies:
//! consecutive hosts sharing a prefix before their trailing number share one bracket group.

/// A hostlist that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    /// A `[` without its `]`, or a `]` without its `[`.
    #[error("hostlist {list:?}: unbalanced brackets")]
    Unbalanced {
        /// The hostlist.
        list: String,
    },
    /// A range that is not `N` or `N-M` with `N <= M`.
    #[error("hostlist {list:?}: invalid range {range:?} (expected N or N-M with N <= M)")]
    Range {
        /// The hostlist.
        list: String,
        /// The offending range.
        range: String,
    },
    /// An empty range (`a[]`).
    #[error("hostlist {list:?}: empty range")]
    Empty {
        /// The hostlist.
        list: String,
    },
    /// Text after the last bracket group (`a[1-2]b`; Slurm rejects it too).
    #[error("hostlist {list:?}: {suffix:?} after the last bracket group")]
    Suffix {
        /// The hostlist.
        list: String,
        /// The trailing text.
        suffix: String,
    },
    /// The expansion would exceed [`MAX_HOSTS`] names.
    #[error("hostlist {list:?}: expands to more than {MAX_HOSTS} hosts")]
    TooLarge {
        /// The hostlist.
        list: String,
    },
}

/// The most hosts one hostlist may expand to (Slurm's own limit is of the same order).
pub const MAX_HOSTS: usize = 1 << 20;

/// Splits at commas that are not inside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => {
                return Err(HostlistError::Unbalanced {
                    list: list.to_string(),
                })
            }
            ']' if depth == 1 => depth = 0,
            ']' => {
                return Err(HostlistError::Unbalanced {
                    list: list.to_string(),
                })
            }
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError::Unbalanced {
            list: list.to_string(),
        });
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// The values of one bracket body (`01-03,07`), formatted with their widths.
fn expand_ranges(body: &str, list: &str) -> Result<Vec<String>, HostlistError> {
    let bad = |r: &str| HostlistError::Range {
        list: list.to_string(),
        range: r.to_string(),
    };
    let mut out = Vec::new();
    for r in body.split(',') {
        let r = r.trim();
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad(r));
        }
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad(r))?,
            hi.parse().map_err(|_| bad(r))?,
        );
        if a > b {
            return Err(bad(r));
        }
        if (b - a) as usize >= MAX_HOSTS || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(HostlistError::TooLarge {
                list: list.to_string(),
            });
        }
        let w = lo.len();
        out.extend((a..=b).map(|n| format!("{n:0w$}")));
    }
    Ok(out)
}

/// Expands a Slurm hostlist into host names, in order (duplicates kept, as Slurm does).
/// An empty (or all-blank) list expands to no hosts.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, HostlistError> {
    let mut hosts = Vec::new();
    if list.trim().is_empty() {
        return Ok(hosts);
    }
    for part in split_top(list.trim())? {
        let part = part.trim();
        if part.is_empty() {
            continue; // `a,,b` is `a,b`, as in Slurm
        }
        // Product over the bracket groups, left to right.
        let mut names = vec![String::new()];
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').map(|c| open + c).ok_or_else(|| {
                HostlistError::Unbalanced {
                    list: list.to_string(),
                }
            })?;
            let (literal, body) = (&rest[..open], &rest[open + 1..close]);
            if body.trim().is_empty() {
                return Err(HostlistError::Empty {
                    list: list.to_string(),
                });
            }
            let values = expand_ranges(body, list)?;
            if names.len().saturating_mul(values.len()) + hosts.len() > MAX_HOSTS {
                return Err(HostlistError::TooLarge {
                    list: list.to_string(),
                });
            }
            names = names
                .iter()
                .flat_map(|n| values.iter().map(move |v| format!("{n}{literal}{v}")))
                .collect();
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() && rest.len() < part.len() && part.contains(']') {
            return Err(HostlistError::Suffix {
                list: list.to_string(),
                suffix: rest.to_string(),
            });
        }
        hosts.extend(names.into_iter().map(|n| n + rest));
    }
    Ok(hosts)
}

/// A host name split as prefix + trailing number (`gpu07` → `gpu`, 7, width 2).
fn split_number(host: &str) -> Option<(&str, u64, usize)> {
    let digits = host
        .bytes()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let (prefix, num) = host.split_at(host.len() - digits);
    Some((prefix, num.parse().ok()?, digits))
}

/// Compresses host names into a hostlist, keeping their order: consecutive hosts with the
/// same prefix share one bracket group, and runs of consecutive numbers that print with the
/// same width become ranges (`gpu01,gpu02,gpu03,gpu07,cpu5` → `gpu[01-03,07],cpu5`).
/// `expand_hostlist(&compress_hostlist(h)) == h` for any host names without brackets or commas.
pub fn compress_hostlist<S: AsRef<str>>(hosts: &[S]) -> String {
    // Per group: the prefix and its ranges (lo, hi, width).
    type Ranges = Vec<(u64, u64, usize)>;
    let mut groups: Vec<(String, Ranges)> = Vec::new();
    let mut plain: Vec<Option<usize>> = Vec::new(); // index into groups, None = no number
    let mut names: Vec<String> = Vec::new();
    for h in hosts {
        let h = h.as_ref();
        match split_number(h) {
            Some((prefix, n, digits)) => {
                let same_group = matches!(plain.last(), Some(Some(g)) if groups[*g].0 == prefix);
                if same_group {
                    let g = plain.last().copied().flatten().expect("checked");
                    let ranges = &mut groups[g].1;
                    let (_, hi, w) = ranges.last_mut().expect("groups are never empty");
                    // n continues the range if it prints as itself in the range's width.
                    if n == *hi + 1 && format!("{n:0w$}", w = *w).len() == digits {
                        *hi = n;
                    } else {
                        ranges.push((n, n, digits));
                    }
                } else {
                    groups.push((prefix.to_string(), vec![(n, n, digits)]));
                    plain.push(Some(groups.len() - 1));
                    names.push(String::new());
                }
            }
            None => {
                plain.push(None);
                names.push(h.to_string());
            }
        }
    }
    let mut out = Vec::with_capacity(plain.len());
    for (slot, name) in plain.iter().zip(names) {
        match slot {
            None => out.push(name),
            Some(g) => {
                let (prefix, ranges) = &groups[*g];
                let body: Vec<String> = ranges
                    .iter()
                    .map(|&(lo, hi, w)| {
                        if lo == hi {
                            format!("{lo:0w$}")
                        } else {
                            format!("{lo:0w$}-{hi:0w$}")
                        }
                    })
                    .collect();
                if ranges.len() == 1 && ranges[0].0 == ranges[0].1 {
                    out.push(format!("{prefix}{}", body[0]));
                } else {
                    out.push(format!("{prefix}[{}]", body.join(",")));
                }
            }
        }
    }
    out.join(",")
}

/// Hostlists both this module and `scontrol show hostnames` reject.
pub const INVALID: &[&str] = &["a[]", "a[1-b]", "a[[1]]", "a[1-2]b", "x[3-1]", "a[1]b,c"];

/// Test cases: (hostlist, its expansion separated by spaces). The unit tests expand them;
/// `tests/slurm.rs` checks them against `scontrol show hostnames` on a live cluster.
pub const CASES: &[(&str, &str)] = &[
    ("", ""),
    ("localhost", "localhost"),
    ("gpu[01-03,07],cpu5", "gpu01 gpu02 gpu03 gpu07 cpu5"),
    ("n[8-10]", "n8 n9 n10"),
    ("m[098-101]", "m098 m099 m100 m101"),
    (
        "rack[1-2]-node[01-02]",
        "rack1-node01 rack1-node02 rack2-node01 rack2-node02",
    ),
    ("a[1,3-4]", "a1 a3 a4"),
    ("n[0-3,5,7-8]", "n0 n1 n2 n3 n5 n7 n8"),
    ("p[1-2]q[3]", "p1q3 p2q3"),
    ("a[2,1]", "a2 a1"),
    ("a,,b", "a b"),
    (" a , b", "a b"),
    ("x[5]", "x5"),
    ("a,b[2-3],c", "a b2 b3 c"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_table() {
        for (list, want) in CASES {
            let got = expand_hostlist(list).unwrap();
            let want: Vec<&str> = want.split_whitespace().collect();
            assert_eq!(got, want, "{list}");
        }
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in INVALID.iter().chain(&["a[1-2", "a]1"]) {
            assert!(expand_hostlist(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            expand_hostlist("n[0-99999999]"),
            Err(HostlistError::TooLarge { .. })
        ));
    }

    #[test]
    fn compresses_like_scontrol_show_hostlist() {
        let cases = [
            ("gpu01,gpu02,gpu03,gpu07,cpu5", "gpu[01-03,07],cpu5"),
            (
                "gpu01,gpu02,cpu5,gpu03,n9,n10,a1,a01,a02",
                "gpu[01-02],cpu5,gpu03,n[9-10],a[1,01-02]",
            ),
            (
                "rack1-node01,rack1-node02,rack2-node01",
                "rack1-node[01-02],rack2-node01",
            ),
            ("localhost", "localhost"),
            ("", ""),
        ];
        for (hosts, want) in cases {
            let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
            assert_eq!(compress_hostlist(&hosts), want);
        }
    }

    #[test]
    fn compression_round_trips() {
        for (list, _) in CASES {
            let hosts = expand_hostlist(list).unwrap();
            assert_eq!(expand_hostlist(&compress_hostlist(&hosts)).unwrap(), hosts);
        }
    }
}
