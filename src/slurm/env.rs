//! The Slurm job environment, read through one table (submitit's habit): every `SLURM_*`
//! variable MixAtlas uses, what it means and its value off the cluster, so the same binary
//! runs on a laptop as rank 0 of 1.

use super::hostlist::{expand_hostlist, HostlistError};

/// One variable of the table.
#[derive(Debug, Clone, Copy)]
pub struct SlurmVar {
    /// The environment variable.
    pub name: &'static str,
    /// The value assumed when it is unset (off the cluster).
    pub default: &'static str,
    /// What it holds.
    pub meaning: &'static str,
}

/// Every variable [`SlurmEnv`] reads, in field order. `docs/slurm.md` prints the same table.
pub const VARS: &[SlurmVar] = &[
    SlurmVar {
        name: "SLURM_JOB_ID",
        default: "",
        meaning: "job id (an array task's own id); empty off the cluster",
    },
    SlurmVar {
        name: "SLURM_PROCID",
        default: "0",
        meaning: "global rank of this task",
    },
    SlurmVar {
        name: "SLURM_LOCALID",
        default: "0",
        meaning: "rank among the tasks on this node",
    },
    SlurmVar {
        name: "SLURM_NTASKS",
        default: "1",
        meaning: "tasks in the job step",
    },
    SlurmVar {
        name: "SLURM_JOB_NUM_NODES",
        default: "1",
        meaning: "nodes in the allocation",
    },
    SlurmVar {
        name: "SLURM_NODEID",
        default: "0",
        meaning: "this node's index in the allocation",
    },
    SlurmVar {
        name: "SLURM_JOB_NODELIST",
        default: "",
        meaning: "the allocation's hosts (compressed hostlist, expanded here)",
    },
    SlurmVar {
        name: "SLURM_ARRAY_JOB_ID",
        default: "",
        meaning: "the array's job id (%A); empty outside arrays",
    },
    SlurmVar {
        name: "SLURM_ARRAY_TASK_ID",
        default: "",
        meaning: "this array task's index (%a); empty outside arrays",
    },
    SlurmVar {
        name: "SLURM_GPUS_ON_NODE",
        default: "0",
        meaning: "GPUs allocated on this node",
    },
    SlurmVar {
        name: "CUDA_VISIBLE_DEVICES",
        default: "",
        meaning: "GPUs this task may use (indices or UUIDs)",
    },
    SlurmVar {
        name: "SLURM_RESTART_COUNT",
        default: "0",
        meaning: "times the job was requeued",
    },
];

/// Variables read only for a task's placement ([`SlurmPlacement`]), beside [`VARS`]: the
/// older name of the node count and the per-node task counts.
pub const PLACEMENT_VARS: &[SlurmVar] = &[
    SlurmVar {
        name: "SLURM_NNODES",
        default: "",
        meaning: "nodes in the allocation (older name of SLURM_JOB_NUM_NODES)",
    },
    SlurmVar {
        name: "SLURM_NTASKS_PER_NODE",
        default: "",
        meaning: "tasks per node as requested, e.g. \"4\" (the first number is this node's)",
    },
    SlurmVar {
        name: "SLURM_TASKS_PER_NODE",
        default: "",
        meaning: "tasks per node as launched, e.g. \"4(x2)\" (the first number is this node's)",
    },
];

/// Where `srun` placed this task, read leniently: each field is `None` when its variable is
/// unset or not a number (no table defaults, no errors). `crate::dist::LaunchEnv` combines
/// these with the MPI launchers' variables; [`SlurmEnv`] is the strict reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlurmPlacement {
    /// `SLURM_PROCID`.
    pub proc_id: Option<usize>,
    /// `SLURM_NTASKS`.
    pub ntasks: Option<usize>,
    /// `SLURM_LOCALID`.
    pub local_id: Option<usize>,
    /// The first number of `SLURM_NTASKS_PER_NODE`, or of `SLURM_TASKS_PER_NODE` when the
    /// former is unset.
    pub tasks_on_node: Option<usize>,
    /// `SLURM_JOB_NUM_NODES`, else `SLURM_NNODES`.
    pub num_nodes: Option<usize>,
    /// `SLURM_NODEID`.
    pub node_id: Option<usize>,
}

impl SlurmPlacement {
    /// Reads through `var` (`std::env::var` in `LaunchEnv::detect`; a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let num = |keys: &[&str]| -> Option<usize> {
            keys.iter()
                .find_map(|k| var(k).and_then(|v| v.trim().parse().ok()))
        };
        // Slurm writes e.g. "4" or "4(x2)"; the first number is this node's count.
        let tasks_on_node = var("SLURM_NTASKS_PER_NODE")
            .or_else(|| var("SLURM_TASKS_PER_NODE"))
            .and_then(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            });
        Self {
            proc_id: num(&["SLURM_PROCID"]),
            ntasks: num(&["SLURM_NTASKS"]),
            local_id: num(&["SLURM_LOCALID"]),
            tasks_on_node,
            num_nodes: num(&["SLURM_JOB_NUM_NODES", "SLURM_NNODES"]),
            node_id: num(&["SLURM_NODEID"]),
        }
    }
}

/// A variable with a value of the wrong form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlurmEnvError {
    /// Not a non-negative integer.
    #[error("{name}={value:?}: expected a non-negative integer")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `SLURM_JOB_NODELIST` does not parse.
    #[error("SLURM_JOB_NODELIST: {0}")]
    Hostlist(#[from] HostlistError),
}

/// Where this process sits in a Slurm job (rank 0 of 1 on one node off the cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmEnv {
    /// `SLURM_JOB_ID`; `None` off the cluster.
    pub job_id: Option<String>,
    /// `SLURM_PROCID`.
    pub proc_id: usize,
    /// `SLURM_LOCALID`.
    pub local_id: usize,
    /// `SLURM_NTASKS`.
    pub ntasks: usize,
    /// `SLURM_JOB_NUM_NODES`.
    pub num_nodes: usize,
    /// `SLURM_NODEID`.
    pub node_id: usize,
    /// `SLURM_JOB_NODELIST`, expanded (empty off the cluster).
    pub nodes: Vec<String>,
    /// `SLURM_ARRAY_JOB_ID`.
    pub array_job_id: Option<String>,
    /// `SLURM_ARRAY_TASK_ID`.
    pub array_task_id: Option<usize>,
    /// `SLURM_GPUS_ON_NODE`.
    pub gpus_on_node: usize,
    /// `CUDA_VISIBLE_DEVICES`, split at commas (empty when unset).
    pub cuda_visible_devices: Vec<String>,
    /// `SLURM_RESTART_COUNT`.
    pub restart_count: u32,
}

impl Default for SlurmEnv {
    fn default() -> Self {
        Self::from_vars(|_| None).expect("the table's defaults parse")
    }
}

impl SlurmEnv {
    /// Reads the process environment.
    pub fn detect() -> Result<Self, SlurmEnvError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads through `var` (for tests); unset or blank variables take the table's default.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SlurmEnvError> {
        let raw: Vec<String> = VARS
            .iter()
            .map(|v| {
                var(v.name)
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| v.default.to_string())
            })
            .collect();
        let get = |name: &str| -> &str {
            let i = VARS
                .iter()
                .position(|v| v.name == name)
                .expect("variable is in the table");
            &raw[i]
        };
        let text = |name: &str| Some(get(name).to_string()).filter(|s| !s.is_empty());
        let num = |name: &'static str| -> Result<usize, SlurmEnvError> {
            let v = get(name);
            v.parse().map_err(|_| SlurmEnvError::NotANumber {
                name,
                value: v.to_string(),
            })
        };
        Ok(Self {
            job_id: text("SLURM_JOB_ID"),
            proc_id: num("SLURM_PROCID")?,
            local_id: num("SLURM_LOCALID")?,
            ntasks: num("SLURM_NTASKS")?.max(1),
            num_nodes: num("SLURM_JOB_NUM_NODES")?.max(1),
            node_id: num("SLURM_NODEID")?,
            nodes: expand_hostlist(get("SLURM_JOB_NODELIST"))?,
            array_job_id: text("SLURM_ARRAY_JOB_ID"),
            array_task_id: match text("SLURM_ARRAY_TASK_ID") {
                Some(_) => Some(num("SLURM_ARRAY_TASK_ID")?),
                None => None,
            },
            gpus_on_node: num("SLURM_GPUS_ON_NODE")?,
            cuda_visible_devices: get("CUDA_VISIBLE_DEVICES")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            restart_count: num("SLURM_RESTART_COUNT")? as u32,
        })
    }

    /// Whether this process runs inside a Slurm job.
    pub fn in_job(&self) -> bool {
        self.job_id.is_some()
    }

    /// The first host of the allocation (the rendezvous host of a multi-node run), if known.
    pub fn head_node(&self) -> Option<&str> {
        self.nodes.first().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<SlurmEnv, SlurmEnvError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SlurmEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn off_the_cluster_is_rank_0_of_1() {
        let e = env(&[]).unwrap();
        assert_eq!(e, SlurmEnv::default());
        assert!(!e.in_job());
        assert_eq!(
            (e.proc_id, e.ntasks, e.num_nodes, e.restart_count),
            (0, 1, 1, 0)
        );
        assert!(e.nodes.is_empty() && e.cuda_visible_devices.is_empty());
        assert_eq!(e.array_task_id, None);
    }

    #[test]
    fn reads_every_variable_of_a_multi_node_array_task() {
        let e = env(&[
            ("SLURM_JOB_ID", "1234"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_JOB_NUM_NODES", "2"),
            ("SLURM_NODEID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("SLURM_ARRAY_JOB_ID", "1200"),
            ("SLURM_ARRAY_TASK_ID", "34"),
            ("SLURM_GPUS_ON_NODE", "4"),
            ("CUDA_VISIBLE_DEVICES", "0,1,2,3"),
            ("SLURM_RESTART_COUNT", "2"),
        ])
        .unwrap();
        assert_eq!(e.job_id.as_deref(), Some("1234"));
        assert_eq!((e.proc_id, e.local_id, e.ntasks), (5, 1, 8));
        assert_eq!((e.num_nodes, e.node_id), (2, 1));
        assert_eq!(e.nodes, ["gpu07", "gpu08"]);
        assert_eq!(e.head_node(), Some("gpu07"));
        assert_eq!(e.array_job_id.as_deref(), Some("1200"));
        assert_eq!(e.array_task_id, Some(34));
        assert_eq!(e.gpus_on_node, 4);
        assert_eq!(e.cuda_visible_devices, ["0", "1", "2", "3"]);
        assert_eq!(e.restart_count, 2);
    }

    #[test]
    fn malformed_values_are_named() {
        let err = env(&[("SLURM_PROCID", "x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SLURM_PROCID=\"x\": expected a non-negative integer"
        );
        assert!(env(&[("SLURM_JOB_NODELIST", "a[1-")]).is_err());
    }

    #[test]
    fn the_table_names_each_variable_once() {
        let mut names: Vec<_> = VARS.iter().map(|v| v.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VARS.len());
    }

    #[test]
    fn placement_reads_only_table_variables_leniently() {
        let asked = std::cell::RefCell::new(Vec::new());
        let p = SlurmPlacement::from_vars(|k| {
            asked.borrow_mut().push(k.to_string());
            None
        });
        assert_eq!(p, SlurmPlacement::default());
        for name in asked.borrow().iter() {
            assert!(
                VARS.iter().chain(PLACEMENT_VARS).any(|v| v.name == *name),
                "{name} is in neither table"
            );
        }
        assert!(PLACEMENT_VARS
            .iter()
            .all(|p| VARS.iter().all(|v| v.name != p.name)));
        let m: HashMap<&str, &str> = [
            ("SLURM_PROCID", "x"),
            ("SLURM_NTASKS", " 8 "),
            ("SLURM_NNODES", "3"),
            ("SLURM_TASKS_PER_NODE", "2(x4)"),
        ]
        .into();
        let p = SlurmPlacement::from_vars(|k| m.get(k).map(|v| v.to_string()));
        assert_eq!(
            (p.proc_id, p.ntasks, p.num_nodes, p.tasks_on_node, p.node_id),
            (None, Some(8), Some(3), Some(2), None)
        );
    }
}
