//! The searches a report shows: every search directory (its resolved config and replayed trial
//! log) found in the directory given or in its sub-directories.

use std::path::{Path, PathBuf};

use crate::fsutil::IoContext;
use crate::search::config::SearchConfig;
use crate::search::run::RESOLVED_FILE;
use crate::search::state::{SearchState, TRIALS_FILE};

use super::error::ReportError;

/// One search found under the search directory.
pub(super) struct Search {
    /// The method's name (`gp-ucb`, `regmix`, …).
    pub method: String,
    /// Its resolved configuration.
    pub cfg: SearchConfig,
    /// Its directory.
    pub dir: PathBuf,
    /// Its trials, replayed from the log.
    pub state: SearchState,
}

fn load_search(dir: &Path) -> Result<Search, ReportError> {
    let resolved_path = dir.join(RESOLVED_FILE);
    let json_err = |source| ReportError::Json {
        path: resolved_path.clone(),
        source,
    };
    let resolved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&resolved_path).at("reading", &resolved_path)?,
    )
    .map_err(json_err)?;
    let cfg: SearchConfig = serde_json::from_value(resolved["search"].clone()).map_err(json_err)?;
    let trials_path = dir.join(TRIALS_FILE);
    let text = std::fs::read_to_string(&trials_path).at("reading", &trials_path)?;
    let state = SearchState::replay(&text, cfg.budget.retries + 1)
        .map_err(|e| ReportError::search("the trial log", dir, e))?;
    Ok(Search {
        method: cfg.method.name().to_string(),
        cfg,
        dir: dir.to_path_buf(),
        state,
    })
}

/// Searches in `dir` itself or in its sub-directories.
pub(super) fn find_searches(dir: &Path) -> Result<Vec<Search>, ReportError> {
    if dir.join(TRIALS_FILE).is_file() {
        return Ok(vec![load_search(dir)?]);
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .at("reading", dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(TRIALS_FILE).is_file())
        .collect();
    subs.sort();
    if subs.is_empty() {
        return Err(ReportError::NoSearch {
            dir: dir.to_path_buf(),
        });
    }
    subs.iter().map(|p| load_search(p)).collect()
}
