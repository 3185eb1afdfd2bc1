//! sbatch scripts from a typed spec: [`render`] is a pure function (sorted `#SBATCH` lines,
//! a signal-forwarding prelude, then setup / command / teardown sections), checked by
//! snapshot tests and, on a live cluster, by `sbatch --test-only`.
//!
//! The command sections of MixAtlas's three jobs are the templates in the repository's
//! `slurm/` folder (compiled in): [`SearchJob`] (the search controller, one task),
//! [`TrialsArrayJob`] (proxy trials as a job array, one trial per array task) and
//! [`TransferJob`] (a multi-node `srun --mpi=pmix` training run). Their `{{name}}`
//! placeholders are filled by [`fill`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A job script that cannot be rendered: a template that does not match its values, or an
/// `#SBATCH` option that cannot be written on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template uses a placeholder no value was given for.
    #[error("template placeholder {{{{{0}}}}} has no value")]
    Missing(String),
    /// A value was given for a placeholder the template does not use.
    #[error("value {0:?} is not a placeholder of the template")]
    Unused(String),
    /// A `{{` without its `}}`.
    #[error("template has an unclosed {{{{ at byte {0}")]
    Unclosed(usize),
    /// An `#SBATCH` option name that is not `[A-Za-z0-9_-]+`.
    #[error("sbatch option name {0:?}: expected letters, digits, '-' or '_'")]
    OptionName(String),
    /// An `#SBATCH` value holding a line break or another control character, which would end
    /// the `#SBATCH` line and become a line of the script.
    #[error("sbatch option --{option} value {value:?}: a line break or control character cannot be written in an #SBATCH line")]
    OptionValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
    },
}

/// `--array=INDICES[%THROTTLE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    /// Indices: `0-15`, `1,3,5-7`.
    pub indices: String,
    /// At most this many tasks at once.
    pub throttle: Option<u32>,
}

impl ArraySpec {
    /// Tasks `0..n`, at most `throttle` at once.
    pub fn count(n: usize, throttle: Option<u32>) -> Self {
        assert!(n > 0, "an array needs at least one task");
        Self {
            indices: format!("0-{}", n - 1),
            throttle,
        }
    }
}

/// `--signal=[B:]SIG@GRACE`: Slurm sends `SIG` this many seconds before the time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSpec {
    /// Signal name without `SIG` (`USR2`).
    pub name: String,
    /// Seconds before the time limit.
    pub grace_s: u32,
    /// Only to the batch shell (`B:`), which forwards it to the command (the templates' way).
    pub batch_only: bool,
}

impl SignalSpec {
    /// `B:USR2@grace_s`, the templates' choice (USR1 may be caught by NCCL).
    pub fn usr2(grace_s: u32) -> Self {
        Self {
            name: "USR2".into(),
            grace_s,
            batch_only: true,
        }
    }
}

/// Everything an sbatch script states. `None`/empty fields are left out of the script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbatchSpec {
    /// `--job-name`.
    pub job_name: String,
    /// `--output` (`%j` job id, `%A`/`%a` array job and task).
    pub output: Option<String>,
    /// `--error`.
    pub error: Option<String>,
    /// `--time`, minutes.
    pub time_min: Option<u32>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--gres` (`gpu:8`).
    pub gres: Option<String>,
    /// `--mem` (`32G`; `0` = all of the node's memory).
    pub mem: Option<String>,
    /// `--chdir`.
    pub chdir: Option<String>,
    /// `--array`.
    pub array: Option<ArraySpec>,
    /// `--signal`.
    pub signal: Option<SignalSpec>,
    /// `--requeue` (needed by `scontrol requeue`).
    pub requeue: bool,
    /// `--open-mode=append` (a requeued job appends to its logs).
    pub open_mode_append: bool,
    /// Escape hatch: any other sbatch option, without the leading `--` (`qos` → `high`;
    /// `None` for a flag without value). An option also set by a typed field wins over it.
    pub extra: BTreeMap<String, Option<String>>,
    /// Lines run first (environment, modules).
    pub setup: Vec<String>,
    /// The job's command lines; the status of the last is the job's.
    pub command: Vec<String>,
    /// Lines run after the command, also when it failed.
    pub teardown: Vec<String>,
}

/// A header value as sbatch reads it: bare when it is only safe characters, else in `"…"`
/// with `\` and `"` escaped (sbatch's `#SBATCH` parser honours quotes and backslashes; an
/// unquoted `#` would start a comment). Control characters, which could end the line, are
/// refused by [`SbatchSpec::check`]; here they are replaced by `?` so that even an unchecked
/// spec never renders a value onto a line of its own.
fn header_value(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%[]".contains(&b))
    {
        return v.to_string();
    }
    let v: String = v
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An option name as written after `#SBATCH --` (anything else is dropped by [`render`] and
/// refused by [`SbatchSpec::check`]).
fn is_option_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Quotes words for the shell and joins them with spaces: a command line whose every word
/// arrives as one argument.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for the shell (single quotes; `'` as `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl SbatchSpec {
    /// Checks that every option can be written as one `#SBATCH` line: option names are
    /// `[A-Za-z0-9_-]+` and no value holds a line break or control character.
    pub fn check(&self) -> Result<(), TemplateError> {
        for (k, v) in self.options() {
            if !is_option_name(&k) {
                return Err(TemplateError::OptionName(k));
            }
            if let Some(v) = v.filter(|v| v.chars().any(char::is_control)) {
                return Err(TemplateError::OptionValue {
                    option: k,
                    value: v,
                });
            }
        }
        Ok(())
    }

    /// The `#SBATCH` options, sorted by name.
    pub fn options(&self) -> BTreeMap<String, Option<String>> {
        let mut o = self.extra.clone();
        let mut set = |k: &str, v: Option<String>| {
            o.insert(k.to_string(), v);
        };
        set("job-name", Some(self.job_name.clone()));
        let typed = [
            ("output", self.output.clone()),
            ("error", self.error.clone()),
            ("time", self.time_min.map(|m| m.to_string())),
            ("partition", self.partition.clone()),
            ("nodes", self.nodes.map(|n| n.to_string())),
            (
                "ntasks-per-node",
                self.ntasks_per_node.map(|n| n.to_string()),
            ),
            ("cpus-per-task", self.cpus_per_task.map(|n| n.to_string())),
            ("gpus-per-task", self.gpus_per_task.map(|n| n.to_string())),
            ("gres", self.gres.clone()),
            ("mem", self.mem.clone()),
            ("chdir", self.chdir.clone()),
            (
                "array",
                self.array.as_ref().map(|a| match a.throttle {
                    Some(t) => format!("{}%{t}", a.indices),
                    None => a.indices.clone(),
                }),
            ),
            (
                "signal",
                self.signal.as_ref().map(|s| {
                    format!(
                        "{}{}@{}",
                        if s.batch_only { "B:" } else { "" },
                        s.name,
                        s.grace_s
                    )
                }),
            ),
        ];
        for (k, v) in typed {
            if v.is_some() {
                set(k, v);
            }
        }
        if self.requeue {
            set("requeue", None);
        }
        if self.open_mode_append {
            set("open-mode", Some("append".into()));
        }
        o
    }
}

/// Renders the script: `#!/bin/bash`, the sorted `#SBATCH` lines, a prelude that forwards
/// the preemption signal from the batch shell to the command (`wait_forwarding PID` waits for
/// a background command and passes the signal on; `$preempted` is 1 once it came), then the
/// setup, command and teardown sections. The script exits with the command section's status.
pub fn render(spec: &SbatchSpec) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str("# Rendered by mixatlas (src/slurm/sbatch.rs); edit the spec, not this file.\n");
    for (k, v) in spec.options() {
        if !is_option_name(&k) {
            continue;
        }
        match v {
            Some(v) => s.push_str(&format!("#SBATCH --{k}={}\n", header_value(&v))),
            None => s.push_str(&format!("#SBATCH --{k}\n")),
        }
    }
    let sig = spec
        .signal
        .as_ref()
        .map_or("USR2".to_string(), |x| x.name.clone());
    s.push_str(&format!(
        r#"
# --- prelude: Slurm signals only this shell (--signal=B:{sig}@…, scancel --batch); a shell
# waiting in the foreground would defer the signal, so commands run in the background and
# wait_forwarding passes {sig} on to them.
preempted=0
child=""
trap 'preempted=1; echo "received {sig}" >&2; [ -n "$child" ] && kill -{sig} "$child" 2>/dev/null' {sig}
wait_forwarding() {{
  child=$1
  local rc
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=""
  return "$rc"
}}
"#
    ));
    let section = |s: &mut String, name: &str, lines: &[String]| {
        s.push_str(&format!("\n# --- {name}\n"));
        for l in lines {
            s.push_str(l);
            if !l.ends_with('\n') {
                s.push('\n');
            }
        }
    };
    section(&mut s, "setup", &spec.setup);
    section(&mut s, "command", &spec.command);
    s.push_str("rc=$?\n");
    section(&mut s, "teardown", &spec.teardown);
    s.push_str("exit \"$rc\"\n");
    s
}

/// Substitutes `{{name}}` placeholders; every placeholder needs a value and every value a
/// placeholder (a typo fails loudly instead of rendering a broken script).
pub fn fill(template: &str, values: &[(&str, String)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; values.len()];
    let mut rest = template;
    let mut offset = 0;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + i))?;
        let name = rest[i + 2..i + end].trim();
        let k = values
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| TemplateError::Missing(name.to_string()))?;
        used[k] = true;
        out.push_str(&values[k].1);
        offset += i + end + 2;
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    if let Some(k) = used.iter().position(|u| !u) {
        return Err(TemplateError::Unused(values[k].0.to_string()));
    }
    Ok(out)
}

/// The three job templates (files in the repository's `slurm/` folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// The search controller (`slurm/search.sbatch.tmpl`).
    Search,
    /// Proxy trials as a job array (`slurm/trials-array.sbatch.tmpl`).
    TrialsArray,
    /// A multi-node transfer run (`slurm/transfer.sbatch.tmpl`).
    Transfer,
}

impl TemplateKind {
    /// All kinds.
    pub const ALL: [TemplateKind; 3] = [Self::Search, Self::TrialsArray, Self::Transfer];

    /// The template's file name in `slurm/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Search => "search.sbatch.tmpl",
            Self::TrialsArray => "trials-array.sbatch.tmpl",
            Self::Transfer => "transfer.sbatch.tmpl",
        }
    }

    /// The template's text (compiled in from `slurm/`).
    pub fn source(self) -> &'static str {
        match self {
            Self::Search => include_str!("../../slurm/search.sbatch.tmpl"),
            Self::TrialsArray => include_str!("../../slurm/trials-array.sbatch.tmpl"),
            Self::Transfer => include_str!("../../slurm/transfer.sbatch.tmpl"),
        }
    }
}

/// Settings every job shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCommon {
    /// `--job-name`.
    pub job_name: String,
    /// Folder of the job's `.out`/`.err` files (created by the caller before submitting).
    pub log_dir: PathBuf,
    /// `--partition` (`None`: the cluster's default).
    pub partition: Option<String>,
    /// `--time`, minutes.
    pub time_min: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem`.
    pub mem: Option<String>,
    /// Seconds between USR2 and the time limit (`--signal=B:USR2@grace_s`).
    pub grace_s: u32,
    /// Extra sbatch options (the escape hatch).
    pub extra: BTreeMap<String, Option<String>>,
    /// Setup lines (modules, environment).
    pub setup: Vec<String>,
}

impl JobCommon {
    /// Defaults: 120 s grace, nothing else set.
    pub fn new(job_name: &str, log_dir: &Path) -> Self {
        Self {
            job_name: job_name.into(),
            log_dir: log_dir.into(),
            partition: None,
            time_min: None,
            cpus_per_task: None,
            mem: None,
            grace_s: 120,
            extra: BTreeMap::new(),
            setup: Vec::new(),
        }
    }

    fn spec(&self, pattern: &str) -> SbatchSpec {
        let log = |ext: &str| {
            self.log_dir
                .join(format!("{pattern}.{ext}"))
                .to_string_lossy()
                .into_owned()
        };
        SbatchSpec {
            job_name: self.job_name.clone(),
            output: Some(log("out")),
            error: Some(log("err")),
            time_min: self.time_min,
            partition: self.partition.clone(),
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            signal: Some(SignalSpec::usr2(self.grace_s)),
            requeue: true,
            open_mode_append: true,
            extra: self.extra.clone(),
            setup: self.setup.clone(),
            ..SbatchSpec::default()
        }
    }
}

fn path_word(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// The search controller: one task running `command` (e.g. `mixatlas search --config …`) in
/// `workdir`; on USR2 the command is stopped and the job requeued (at most `max_requeues`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchJob {
    /// Shared settings.
    pub common: JobCommon,
    /// Directory the controller runs in.
    pub workdir: PathBuf,
    /// The controller command line (shell text).
    pub command: String,
    /// Requeues allowed after preemption.
    pub max_requeues: u32,
}

impl SearchJob {
    /// The job's spec.
    pub fn spec(&self) -> Result<SbatchSpec, TemplateError> {
        let mut s = self.common.spec("%j");
        s.nodes = Some(1);
        s.ntasks_per_node = Some(1);
        s.command = vec![fill(
            TemplateKind::Search.source(),
            &[
                ("workdir", path_word(&self.workdir)),
                ("command", self.command.clone()),
                ("max_requeues", self.max_requeues.to_string()),
            ],
        )?];
        s.check()?;
        Ok(s)
    }
}

/// Proxy trials as a job array: task `i` runs `command` in the trial directory on line `i + 1`
/// of `manifest` (`MIXATLAS_TRIAL_DIR`, `MIXATLAS_MIXTURE`, `MIXATLAS_BLEND` set; output
/// appended to the trial's `trial.log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialsArrayJob {
    /// Shared settings (per array task).
    pub common: JobCommon,
    /// One trial directory per line.
    pub manifest: PathBuf,
    /// Array tasks (= lines of the manifest).
    pub tasks: usize,
    /// At most this many trials at once (`--array=…%N`).
    pub throttle: Option<u32>,
    /// `--gpus-per-task` of each trial.
    pub gpus_per_task: Option<u32>,
    /// The trial command (shell text; e.g. `mixatlas train --corpus C --resume --quiet`).
    pub command: String,
}

impl TrialsArrayJob {
    /// The job's spec.
    pub fn spec(&self) -> Result<SbatchSpec, TemplateError> {
        let mut s = self.common.spec("%A_%a");
        s.nodes = Some(1);
        s.ntasks_per_node = Some(1);
        s.gpus_per_task = self.gpus_per_task;
        s.array = Some(ArraySpec::count(self.tasks, self.throttle));
        s.command = vec![fill(
            TemplateKind::TrialsArray.source(),
            &[
                ("manifest", path_word(&self.manifest)),
                ("command", self.command.clone()),
            ],
        )?];
        s.check()?;
        Ok(s)
    }
}

/// A multi-node transfer run: `srun --mpi=MPI` starts `tasks_per_node` ranks on each of
/// `nodes` nodes with `gpus_per_task` GPUs each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferJob {
    /// Shared settings (per task).
    pub common: JobCommon,
    /// `--nodes`.
    pub nodes: u32,
    /// `--ntasks-per-node` (ranks per node).
    pub tasks_per_node: u32,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// srun's `--mpi` plugin (`pmix`).
    pub mpi: String,
    /// The training command (shell text; pass `--resume` so a requeued job continues).
    pub command: String,
}

impl TransferJob {
    /// The job's spec.
    pub fn spec(&self) -> Result<SbatchSpec, TemplateError> {
        let mut s = self.common.spec("%j");
        s.nodes = Some(self.nodes);
        s.ntasks_per_node = Some(self.tasks_per_node);
        s.gpus_per_task = self.gpus_per_task;
        let mut srun = vec![format!("--ntasks-per-node={}", self.tasks_per_node)];
        if let Some(g) = self.gpus_per_task {
            srun.push(format!("--gpus-per-task={g}"));
        }
        s.command = vec![fill(
            TemplateKind::Transfer.source(),
            &[
                ("mpi", shell_quote(&self.mpi)),
                ("srun_flags", srun.join(" ")),
                ("command", self.command.clone()),
            ],
        )?];
        s.check()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_are_sorted_and_typed_fields_win_over_extra() {
        let mut spec = SbatchSpec {
            job_name: "my job".into(),
            time_min: Some(30),
            partition: Some("debug".into()),
            array: Some(ArraySpec::count(16, Some(4))),
            signal: Some(SignalSpec::usr2(90)),
            requeue: true,
            open_mode_append: true,
            command: vec!["echo hi".into()],
            ..SbatchSpec::default()
        };
        spec.extra.insert("qos".into(), Some("high".into()));
        spec.extra.insert("time".into(), Some("999".into()));
        spec.extra.insert("exclusive".into(), None);
        let text = render(&spec);
        let header: Vec<&str> = text.lines().filter(|l| l.starts_with("#SBATCH")).collect();
        assert_eq!(
            header,
            [
                "#SBATCH --array=0-15%4",
                "#SBATCH --exclusive",
                "#SBATCH --job-name=\"my job\"",
                "#SBATCH --open-mode=append",
                "#SBATCH --partition=debug",
                "#SBATCH --qos=high",
                "#SBATCH --requeue",
                "#SBATCH --signal=B:USR2@90",
                "#SBATCH --time=30",
            ]
        );
        assert!(text.starts_with("#!/bin/bash\n"));
        let (setup, command, teardown) = (
            text.find("# --- setup").unwrap(),
            text.find("# --- command").unwrap(),
            text.find("# --- teardown").unwrap(),
        );
        assert!(setup < command && command < teardown);
        assert_eq!(render(&spec), text, "pure");
    }

    #[test]
    fn fill_requires_every_placeholder_and_every_value() {
        assert_eq!(fill("a {{x}} b", &[("x", "1".into())]).unwrap(), "a 1 b");
        assert_eq!(
            fill("{{x}}", &[]).unwrap_err(),
            TemplateError::Missing("x".into())
        );
        assert_eq!(
            fill("", &[("y", "1".into())]).unwrap_err(),
            TemplateError::Unused("y".into())
        );
        assert!(matches!(fill("{{x", &[]), Err(TemplateError::Unclosed(0))));
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(shell_quote("/tmp/x-1.txt"), "/tmp/x-1.txt");
    }

    #[test]
    fn every_template_fills() {
        let c = JobCommon::new("t", Path::new("/logs"));
        SearchJob {
            common: c.clone(),
            workdir: "/w".into(),
            command: "true".into(),
            max_requeues: 3,
        }
        .spec()
        .unwrap();
        TrialsArrayJob {
            common: c.clone(),
            manifest: "/m".into(),
            tasks: 3,
            throttle: None,
            gpus_per_task: None,
            command: "true".into(),
        }
        .spec()
        .unwrap();
        TransferJob {
            common: c,
            nodes: 2,
            tasks_per_node: 4,
            gpus_per_task: Some(1),
            mpi: "pmix".into(),
            command: "true".into(),
        }
        .spec()
        .unwrap();
    }
}
