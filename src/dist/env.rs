//! The launch environment: which rank this process is, out of how many, on which node, read
//! from the variables `mpirun` (Open MPI, PMI) and `srun` (Slurm) set; rank 0 of 1 when none
//! is set, so the same binary runs on a laptop. The device is chosen by local rank. The Slurm
//! variables are read by `crate::slurm::env` (one table of every `SLURM_*` variable).

use crate::slurm::env::SlurmPlacement;

/// Where this process sits in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchEnv {
    /// Global rank.
    pub rank: usize,
    /// Ranks in the job.
    pub world: usize,
    /// Rank among the processes on this node.
    pub local_rank: usize,
    /// Processes on this node.
    pub local_world: usize,
    /// This node's index.
    pub node: usize,
    /// Nodes in the job.
    pub nodes: usize,
}

impl Default for LaunchEnv {
    fn default() -> Self {
        Self {
            rank: 0,
            world: 1,
            local_rank: 0,
            local_world: 1,
            node: 0,
            nodes: 1,
        }
    }
}

impl LaunchEnv {
    /// Reads the process environment.
    pub fn detect() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads through `var` (for tests): Open MPI (`OMPI_COMM_WORLD_*`), then PMI/PMIx
    /// (`PMI_RANK`, `PMI_SIZE`, `PMIX_RANK`), then Slurm (`SLURM_PROCID`, `SLURM_NTASKS`,
    /// `SLURM_LOCALID`, `SLURM_NODEID`, `SLURM_JOB_NUM_NODES`, `SLURM_NTASKS_PER_NODE`, read
    /// by [`SlurmPlacement`] from the `slurm::env` tables).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let num = |keys: &[&str]| -> Option<usize> {
            keys.iter()
                .find_map(|k| var(k).and_then(|v| v.trim().parse().ok()))
        };
        let slurm = SlurmPlacement::from_vars(&var);
        let rank = num(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]).or(slurm.proc_id);
        let world = num(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]).or(slurm.ntasks);
        let (Some(rank), Some(world)) = (rank, world) else {
            return Self::default();
        };
        let local_rank = num(&["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"])
            .or(slurm.local_id)
            .unwrap_or(rank);
        let local_world = num(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"])
            .or(slurm.tasks_on_node)
            .unwrap_or(world);
        let nodes = slurm
            .num_nodes
            .unwrap_or_else(|| world.div_ceil(local_world.max(1)));
        let node = slurm
            .node_id
            .or_else(|| num(&["OMPI_COMM_WORLD_NODE_RANK"]))
            .unwrap_or(rank / local_world.max(1));
        Self {
            rank,
            world: world.max(1),
            local_rank,
            local_world: local_world.max(1),
            node,
            nodes: nodes.max(1),
        }
    }

    /// The GPU this rank uses among `devices` visible ones (local rank modulo the count).
    pub fn device_index(&self, devices: usize) -> usize {
        self.local_rank % devices.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> LaunchEnv {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_open_mpi_slurm_and_defaults() {
        assert_eq!(env(&[]), LaunchEnv::default());
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]);
        assert_eq!(
            (e.rank, e.world, e.local_rank, e.node, e.nodes),
            (3, 4, 1, 1, 2)
        );
        let e = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "2"),
            ("SLURM_JOB_NUM_NODES", "4"),
            ("SLURM_TASKS_PER_NODE", "2(x4)"),
        ]);
        assert_eq!(
            (
                e.rank,
                e.world,
                e.local_rank,
                e.local_world,
                e.node,
                e.nodes
            ),
            (5, 8, 1, 2, 2, 4)
        );
        assert_eq!(e.device_index(8), 1);
        // A half-set environment (rank without size) is not trusted.
        assert_eq!(env(&[("SLURM_PROCID", "2")]), LaunchEnv::default());
    }
}
