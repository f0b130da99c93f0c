//! How a container runs from its image, with Kubernetes' rules on top of
//! the image config: `command` replaces the entrypoint, `args` the cmd;
//! the image's `Env` comes first and the container's `env` wins; the
//! container's `workingDir`, else the image's, else `/`; the user from
//! `runAsUser`/`runAsGroup` (container, then pod), else the image's `User`
//! read against the image's own `/etc/passwd` and `/etc/group`.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};

use super::manifest::RunConfig;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error(
        "the image's user {0:?} is not in its /etc/passwd; use a numeric user or set runAsUser"
    )]
    UnknownUser(String),
    #[error(
        "the image's group {0:?} is not in its /etc/group; use a numeric group or set runAsGroup"
    )]
    UnknownGroup(String),
    #[error(
        "container has runAsNonRoot and image will run as root; set runAsUser or a non-root USER in the image"
    )]
    WouldRunAsRoot,
    #[error("the container has neither a command nor an image entrypoint or cmd")]
    NothingToRun,
}

/// The command line, Kubernetes' rules over the image's.
pub fn command_line(image: &RunConfig, container: &Container) -> Result<Vec<String>, RunError> {
    let command = container.command.clone().filter(|c| !c.is_empty());
    let args = container.args.clone().filter(|a| !a.is_empty());
    let line: Vec<String> = match (command, args) {
        (Some(command), args) => command
            .into_iter()
            .chain(args.unwrap_or_default())
            .collect(),
        (None, Some(args)) => image
            .entrypoint
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(args)
            .collect(),
        (None, None) => image
            .entrypoint
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(image.cmd.clone().unwrap_or_default())
            .collect(),
    };
    if line.is_empty() {
        return Err(RunError::NothingToRun);
    }
    Ok(line)
}

/// The image's `Env` as pairs (entries without `=` are skipped), to be
/// overridden by the container's.
pub fn image_env(image: &RunConfig) -> Vec<(String, String)> {
    image
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn working_dir(image: &RunConfig, container: &Container) -> String {
    container
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// The id `name` has in a passwd- or group-style file (`name:x:ID:...`).
pub fn lookup_id(file: &str, name: &str) -> Option<u32> {
    file.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(2)?.parse().ok())
}

/// The primary group of uid in a passwd file.
fn primary_group(passwd: &str, uid: u32) -> Option<u32> {
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.get(3)?.parse().ok())
}

/// The uid and gid the container runs as.
pub fn user(
    image: &RunConfig,
    container: &Container,
    pod: Option<&PodSecurityContext>,
    rootfs: &Path,
) -> Result<(u32, u32), RunError> {
    let read = |f: &str| std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
    let container_sc = container.security_context.as_ref();
    let run_as_user = container_sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let run_as_group = container_sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    let non_root = container_sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    let spec = image.user.clone().unwrap_or_default();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
        None => (spec.clone(), None),
    };
    let uid = match run_as_user {
        Some(uid) => u32::try_from(uid).map_err(|_| RunError::UnknownUser(uid.to_string()))?,
        None if user_part.is_empty() => 0,
        None => match user_part.parse() {
            Ok(uid) => uid,
            Err(_) => lookup_id(&read("etc/passwd"), &user_part)
                .ok_or_else(|| RunError::UnknownUser(user_part.clone()))?,
        },
    };
    let gid = match (run_as_group, group_part) {
        (Some(gid), _) => {
            u32::try_from(gid).map_err(|_| RunError::UnknownGroup(gid.to_string()))?
        }
        (None, Some(g)) if !g.is_empty() => match g.parse() {
            Ok(gid) => gid,
            Err(_) => lookup_id(&read("etc/group"), &g).ok_or(RunError::UnknownGroup(g))?,
        },
        _ => primary_group(&read("etc/passwd"), uid).unwrap_or(if run_as_user.is_some() {
            0
        } else {
            uid
        }),
    };
    if non_root && uid == 0 {
        return Err(RunError::WouldRunAsRoot);
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::SecurityContext;
    use proptest::prelude::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> RunConfig {
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        RunConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            ..RunConfig::default()
        }
    }

    #[test]
    fn command_and_args_override_as_in_kubernetes() {
        let img = image(&["/app"], &["serve", "--model", "/m.json"]);
        let mut c = Container::default();
        assert_eq!(
            command_line(&img, &c).unwrap(),
            ["/app", "serve", "--model", "/m.json"]
        );
        c.args = Some(vec!["check".into()]);
        assert_eq!(command_line(&img, &c).unwrap(), ["/app", "check"]);
        c.command = Some(vec!["/bin/sh".into(), "-c".into()]);
        c.args = Some(vec!["exit 3".into()]);
        assert_eq!(command_line(&img, &c).unwrap(), ["/bin/sh", "-c", "exit 3"]);
        c.args = None;
        assert_eq!(command_line(&img, &c).unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(
            command_line(&image(&[], &[]), &Container::default()),
            Err(RunError::NothingToRun)
        );
    }

    #[test]
    fn the_user_comes_from_the_security_context_or_the_image() {
        let dir = std::env::temp_dir().join(format!("ferry-run-user-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nnonroot:x:65532:65533::/:\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "staff:x:50:\n").unwrap();
        let mut img = RunConfig::default();
        let c = Container::default();
        assert_eq!(user(&img, &c, None, &dir), Ok((0, 0)));
        img.user = Some("nonroot".into());
        assert_eq!(user(&img, &c, None, &dir), Ok((65532, 65533)));
        img.user = Some("65532:staff".into());
        assert_eq!(user(&img, &c, None, &dir), Ok((65532, 50)));
        img.user = Some("nobody".into());
        assert!(matches!(
            user(&img, &c, None, &dir),
            Err(RunError::UnknownUser(_))
        ));
        img.user = None;
        let pod = PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert_eq!(
            user(&img, &c, Some(&pod), &dir),
            Err(RunError::WouldRunAsRoot)
        );
        let c = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(1001),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(user(&img, &c, Some(&pod), &dir), Ok((1000, 1001)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn env_and_working_dir() {
        let img = RunConfig {
            env: Some(vec!["PATH=/bin".into(), "junk".into(), "A=b=c".into()]),
            working_dir: Some("/srv".into()),
            ..RunConfig::default()
        };
        assert_eq!(
            image_env(&img),
            [("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        let mut c = Container::default();
        assert_eq!(working_dir(&img, &c), "/srv");
        c.working_dir = Some("/w".into());
        assert_eq!(working_dir(&img, &c), "/w");
    }

    proptest! {
        #[test]
        fn reading_passwd_files_never_panics(file in "\\PC{0,200}", name in "[a-z:]{0,6}") {
            let _ = lookup_id(&file, &name);
            let _ = primary_group(&file, 0);
        }
    }
}
