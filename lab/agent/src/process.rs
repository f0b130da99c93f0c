//! A container's process: started inside the pod's network namespace and
//! its image's root filesystem with `nsenter`, in a process group of its
//! own so signals reach everything it started, with its output appended to
//! the container's log file.

use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + signal as shells report it.
    pub code: i32,
    pub signal: Option<i32>,
}

/// A running container process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pub pid: i32,
}

/// Where a container's processes run: its pod's network namespace, its
/// image's root filesystem as `/`, its working directory (a host path
/// inside that root), its user and group. `nsenter` enters all of them, so
/// the container's own command and exec probes run alike.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub netns: String,
    pub rootfs: PathBuf,
    pub working_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Host directories bind-mounted at container paths (the service
    /// account volume), in a mount namespace of the container's own.
    pub mounts: Vec<(PathBuf, String)>,
}

impl Confinement {
    /// `dir` is the working directory in the container, created if missing
    /// as the kubelet does ([`directory_in_root`]).
    pub fn new(netns: &str, rootfs: &Path, dir: &str, uid: u32, gid: u32) -> std::io::Result<Self> {
        Ok(Confinement {
            netns: netns.to_owned(),
            rootfs: rootfs.to_owned(),
            working_dir: directory_in_root(rootfs, dir)?,
            uid,
            gid,
            mounts: Vec::new(),
        })
    }

    /// Adds a bind mount of host `source` at `target` in the container.
    pub fn mount(mut self, source: PathBuf, target: &str) -> Self {
        self.mounts.push((source, target.to_owned()));
        self
    }

    /// What runs in the child before `nsenter`: a private mount namespace
    /// with the bind mounts (their targets are created in the root first,
    /// [`directory_in_root`]). None without mounts.
    pub fn before_exec(
        &self,
    ) -> std::io::Result<Option<impl FnMut() -> std::io::Result<()> + Send + Sync + 'static>> {
        if self.mounts.is_empty() {
            return Ok(None);
        }
        let mut pairs = Vec::new();
        for (source, target) in &self.mounts {
            let target = directory_in_root(&self.rootfs, target)?;
            let c = |p: &Path| {
                std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            };
            pairs.push((c(source)?, c(&target)?));
        }
        Ok(Some(move || {
            // SAFETY: plain syscalls on pointers to strings owned by this
            // closure, in the forked child before exec; nothing allocates.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (source, target) in &pairs {
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        }))
    }

    /// `nsenter` and its arguments up to the command.
    pub fn nsenter(&self) -> Vec<String> {
        vec![
            format!("--net=/run/netns/{}", self.netns),
            format!("--root={}", self.rootfs.display()),
            format!("--wd={}", self.working_dir.display()),
            format!("--setuid={}", self.uid),
            format!("--setgid={}", self.gid),
            "--".into(),
        ]
    }
}

/// The directory `path` names in the container, as a host path under
/// `rootfs`, its missing parts created one at a time. Each part must
/// resolve inside the root: a `..` or a link in the image that leads out
/// (to the host's `/`) is refused before anything is created there.
pub fn directory_in_root(rootfs: &Path, path: &str) -> std::io::Result<PathBuf> {
    let outside = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{path:?} leads outside the image's root"),
        )
    };
    let root = rootfs.canonicalize()?;
    let mut current = root.clone();
    for part in Path::new(path).components() {
        match part {
            std::path::Component::Normal(name) => {
                let next = current.join(name);
                if std::fs::symlink_metadata(&next).is_err() {
                    std::fs::create_dir(&next)?;
                }
                current = next.canonicalize()?;
                if !current.starts_with(&root) {
                    return Err(outside());
                }
            }
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::ParentDir | std::path::Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    Ok(current)
}

/// Starts `argv` confined as `confinement` says, with exactly `env`.
pub fn spawn(
    confinement: &Confinement,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> std::io::Result<Process> {
    if argv.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    }
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new("nsenter");
    if let Some(before_exec) = confinement.before_exec()? {
        // SAFETY: see Confinement::before_exec.
        unsafe {
            command.pre_exec(before_exec);
        }
    }
    let child = command
        .args(confinement.nsenter())
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&confinement.rootfs)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    let pid = child.id() as i32;
    Ok(Process { child, pid })
}

fn kill_group(pid: i32, signal: i32) {
    // The group id is the leader's pid (process_group(0) above). A group
    // that is already gone (ESRCH) is fine.
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-pid, signal);
    }
}

impl Process {
    /// The exit, if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<Exit> {
        let status = self.child.try_wait().ok()??;
        let signal = status.signal();
        let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
        if signal.is_some() || code != 0 {
            // Children it left behind in its group go with it.
            kill_group(self.pid, SIGKILL);
        }
        Some(Exit { code, signal })
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        kill_group(self.pid, signal);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; waits for the end.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        self.signal(SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(exit) = self.try_exit() {
                return exit;
            }
            if Instant::now() >= deadline {
                self.signal(SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_in_the_root_stay_there() {
        let root = std::env::temp_dir().join(format!("ferry-root-{}", std::process::id()));
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let made = directory_in_root(&root, "/var/run/x").unwrap();
        assert_eq!(made, root.canonicalize().unwrap().join("var/run/x"));
        assert!(made.is_dir());
        for bad in ["/out/made", "/var/../../escape", "../x"] {
            assert!(directory_in_root(&root, bad).is_err(), "{bad}");
        }
        assert!(!outside.join("made").exists());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
