//! The reference the gate measures the candidate against: the commit `results/baseline.json` was
//! recorded at, checked out in a git worktree and built next to the candidate.
//!
//! The worktree gets its own target folder, seeded with a copy of the candidate's release
//! folder: the dependencies are already compiled there, so only the workspace's own crates
//! compile again. It cannot share the candidate's folder: cargo judges a workspace crate fresh
//! by file times, and two checkouts of the same crate building in turn into one folder would each
//! take the other's artifacts for their own.
//!
//! When there is nothing to build (the baseline names no commit, the commit is not in this
//! clone, or it is the candidate itself), [`check`] says why, and the gate falls back to the
//! recorded figure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Where the reference's program came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    /// The commit it was built from; `None` when the program was given (`--reference-program`).
    pub commit: Option<String>,
    pub program: PathBuf,
    /// Seconds the build took (the worktree, the copy of the dependencies and cargo).
    pub build_secs: Option<f64>,
}

/// The commit the candidate is, as git sees this checkout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    pub commit: Option<String>,
    /// Tracked files differ from the commit.
    pub modified: bool,
}

/// Why there is no reference to run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unavailable {
    #[error("the recorded baseline names no commit (recorded before the gate ran references)")]
    NoCommit,
    #[error("this is not a git checkout, so commit {0} cannot be checked out")]
    NoGit(String),
    #[error("commit {0} is not in this clone (gone from history, or the clone is shallow)")]
    Gone(String),
    #[error("commit {0} is the candidate itself (HEAD, no modified files)")]
    IsCandidate(String),
    #[error("building commit {commit} failed: {detail} (log: {log})")]
    BuildFailed {
        commit: String,
        detail: String,
        log: String,
    },
}

/// What this checkout is.
pub fn candidate(repo: &Path) -> Candidate {
    let commit = git(repo, &["rev-parse", "HEAD"]).ok();
    let modified = git(repo, &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    Candidate { commit, modified }
}

/// Decide whether `recorded` can be built as a reference for `candidate`, without building.
pub fn check(
    repo: &Path,
    recorded: Option<&str>,
    candidate: &Candidate,
) -> Result<String, Unavailable> {
    let commit = recorded.ok_or(Unavailable::NoCommit)?.to_string();
    if candidate.commit.is_none() {
        return Err(Unavailable::NoGit(commit));
    }
    let full = git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{commit}^{{commit}}"),
        ],
    )
    .map_err(|_| Unavailable::Gone(commit.clone()))?;
    if candidate.commit.as_deref() == Some(full.as_str()) && !candidate.modified {
        return Err(Unavailable::IsCandidate(commit));
    }
    Ok(full)
}

/// Whether `dir` is a cargo profile folder (`target/release`) whose compiled dependencies can
/// seed the reference's build.
pub fn is_cargo_output(dir: &Path) -> bool {
    dir.join("deps").is_dir() && dir.join(".fingerprint").is_dir()
}

/// Check `commit` out under `work` (an absolute path) and build its `loadgen` (which holds the
/// API), seeding the build folder from `candidate_release` (the candidate's `target/release`)
/// when there is one; without it everything compiles.
pub fn build(
    repo: &Path,
    commit: &str,
    work: &Path,
    candidate_release: Option<&Path>,
    say: &dyn Fn(&str),
) -> Result<Reference, Unavailable> {
    let started = Instant::now();
    let failed = |detail: String, log: &Path| Unavailable::BuildFailed {
        commit: commit.to_string(),
        detail,
        log: log.display().to_string(),
    };
    std::fs::create_dir_all(work).map_err(|e| failed(e.to_string(), work))?;
    let source = work.join("reference-src");
    let target = work.join("reference-target");
    let log = work.join("reference-build.log");

    let checked_out = git(&source, &["rev-parse", "HEAD"]).ok();
    if checked_out.as_deref() != Some(commit) {
        say(&format!(
            "reference: checking out {commit} in {}",
            source.display()
        ));
        // A worktree left by an earlier run (or a plain folder) is replaced.
        let _ = git(
            repo,
            &[
                "worktree",
                "remove",
                "--force",
                &source.display().to_string(),
            ],
        );
        let _ = std::fs::remove_dir_all(&source);
        let _ = git(repo, &["worktree", "prune"]);
        git(
            repo,
            &[
                "worktree",
                "add",
                "--detach",
                &source.display().to_string(),
                commit,
            ],
        )
        .map_err(|e| failed(format!("git worktree add: {e}"), &log))?;
    }
    let release = target.join("release");
    if let Some(candidate_release) = candidate_release.filter(|_| !release.exists()) {
        say(&format!(
            "reference: copying the compiled dependencies from {}",
            candidate_release.display()
        ));
        std::fs::create_dir_all(&target).map_err(|e| failed(e.to_string(), &log))?;
        // `cp -a` keeps the files' times, which is what keeps the dependencies fresh.
        let status = Command::new("cp")
            .arg("-a")
            .arg(candidate_release)
            .arg(&release)
            .status()
            .map_err(|e| failed(format!("cp: {e}"), &log))?;
        if !status.success() {
            // Files a concurrent build removed mid-copy: cargo compiles what is missing.
            say(&format!("reference: the copy was incomplete (cp -a exited {status}); cargo builds what is missing"));
        }
    }
    say(&format!(
        "reference: building {commit} (cargo build --release -p loadgen; log {})",
        log.display()
    ));
    let log_file = std::fs::File::create(&log).map_err(|e| failed(e.to_string(), &log))?;
    let err_file = log_file
        .try_clone()
        .map_err(|e| failed(e.to_string(), &log))?;
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--locked", "-p", "loadgen"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .status()
        .map_err(|e| failed(format!("cargo: {e}"), &log))?;
    if !status.success() {
        return Err(failed(format!("cargo exited {status}"), &log));
    }
    Ok(Reference {
        commit: Some(commit.to_string()),
        program: release.join("loadgen"),
        build_secs: Some(crate::figures::round_to(started.elapsed().as_secs_f64(), 1)),
    })
}

/// The repository this process runs in (the current folder's checkout).
pub fn repo_root() -> Option<PathBuf> {
    git(Path::new("."), &["rev-parse", "--show-toplevel"])
        .ok()
        .map(PathBuf::from)
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway repository with two commits.
    fn repo() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .output()
                .unwrap();
            assert!(ok.status.success(), "{args:?}: {ok:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(dir.path().join("f"), "1").unwrap();
        run(&["add", "f"]);
        run(&["commit", "-q", "-m", "one"]);
        let first = git(dir.path(), &["rev-parse", "HEAD"]).unwrap();
        std::fs::write(dir.path().join("f"), "2").unwrap();
        run(&["commit", "-q", "-am", "two"]);
        let second = git(dir.path(), &["rev-parse", "HEAD"]).unwrap();
        (dir, first, second)
    }

    #[test]
    fn an_earlier_commit_is_a_reference() {
        let (dir, first, _) = repo();
        let cand = candidate(dir.path());
        assert_eq!(check(dir.path(), Some(&first[..10]), &cand), Ok(first));
    }

    #[test]
    fn the_candidate_itself_is_not_a_reference_unless_files_are_modified() {
        let (dir, _, second) = repo();
        let cand = candidate(dir.path());
        assert!(!cand.modified);
        assert_eq!(
            check(dir.path(), Some(&second), &cand),
            Err(Unavailable::IsCandidate(second.clone()))
        );
        std::fs::write(dir.path().join("f"), "3").unwrap();
        let cand = candidate(dir.path());
        assert!(cand.modified);
        assert_eq!(check(dir.path(), Some(&second), &cand), Ok(second));
    }

    #[test]
    fn a_missing_commit_or_none_is_said() {
        let (dir, _, _) = repo();
        let cand = candidate(dir.path());
        let gone = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            check(dir.path(), Some(gone), &cand),
            Err(Unavailable::Gone(gone.into()))
        );
        assert_eq!(check(dir.path(), None, &cand), Err(Unavailable::NoCommit));
        let plain = tempfile::tempdir().unwrap();
        let none = candidate(plain.path());
        assert_eq!(
            check(plain.path(), Some("abc"), &none),
            Err(Unavailable::NoGit("abc".into()))
        );
    }
}
