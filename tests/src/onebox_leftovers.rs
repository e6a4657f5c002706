//! What a one-box cluster leaves on the host when its processes are killed instead of
//! stopped: a session or a CI job that ends kills every process, but the kernel keeps the
//! `onebox0` bridge (with the veths of pods whose network namespaces are still mounted),
//! the iptables chains, the mounts under `/run/onebox` and its stale containerd socket.
//! `onebox.sh stop DIR` undoes all of it, but only for the `DIR` the cluster was started
//! from, and a later checkout (CI clones to a new path) does not know that folder. Left
//! there, the next `onebox.sh start` fails: at `ip addr add` ("Address already assigned":
//! its check for the address is a `grep -q` under `pipefail`, which loses the race with
//! `ip`'s second write once the bridge has an IPv6 address too), or at the socket check.
//!
//! So, before a start and only when no cluster answers: the pods' network namespaces that
//! no process holds are removed, then `onebox.sh stop` runs on a stand-in folder marked as
//! started (it then runs its whole host cleanup, which finds what it removes by name, not
//! by PID). What the kubelet mounted under the killed cluster's own folder (its bind mount
//! of `kubelet/`, the pods' secret volumes) is unmounted too: it keeps that folder from
//! being removed.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::onebox::run;

/// onebox.sh's fixed names and addresses (see its header).
const BRIDGE: &str = "/sys/class/net/onebox0";
const RUN_DIR: &str = "/run/onebox";
const CONTAINERD_SOCKET: &str = "/run/onebox/containerd.sock";
const POD_ADDRESS_PREFIX: &str = "10.244.0.";
/// The apiserver on the node address and etcd on loopback.
const CONTROL_PLANE: [SocketAddr; 2] = [
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 1), 36443)),
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 32379)),
];
/// Where containerd's CRI (through CNI) mounts the pods' network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Clears what a killed cluster left, using `script` (`onebox.sh`) and the empty folder
/// `stand_in`, which it creates and removes.
///
/// # Errors
///
/// When a cluster is still running (one runs per machine: it must be stopped from its own
/// folder), or when the cleanup fails.
pub fn clear(script: &Path, stand_in: &Path) -> anyhow::Result<()> {
    if !Path::new(BRIDGE).exists() && !Path::new(RUN_DIR).exists() {
        return Ok(());
    }
    if let Some(running) = answering() {
        anyhow::bail!(
            "a one-box cluster is running on this machine ({running} answers); one runs at a \
             time: stop it with `onebox.sh stop DIR` from the folder it was started in"
        );
    }
    eprintln!(
        "onebox: clearing what a cluster killed without `onebox.sh stop` left on this host \
         (bridge, iptables chains, {RUN_DIR})"
    );
    if stand_in.exists() {
        std::fs::remove_dir_all(stand_in)?;
    }
    std::fs::create_dir_all(stand_in)?;
    // Marked as started: stop then runs every step instead of "not running".
    std::fs::write(stand_in.join("host.saved"), "")?;
    // The host folders the kubelet creates are kept: whose they are is not known here.
    let kept: String = [
        "/var/log/pods",
        "/var/log/containers",
        "/usr/libexec/kubernetes",
        "/run/containerd",
    ]
    .iter()
    .filter(|folder| Path::new(folder).exists())
    .map(|folder| format!("{folder}\n"))
    .collect();
    std::fs::write(stand_in.join("host.preexisting"), kept)?;
    // Before the stop: it deletes the veths, and with them the pod address that tells a
    // namespace of ours from another's.
    remove_orphaned_pod_namespaces()?;
    unmount_kubelet_mounts()?;
    run(Command::new("bash").arg(script).arg("stop").arg(stand_in))?;
    std::fs::remove_dir_all(stand_in)?;
    anyhow::ensure!(
        !Path::new(BRIDGE).exists() && !Path::new(RUN_DIR).exists(),
        "onebox.sh stop left the bridge or {RUN_DIR} in place"
    );
    Ok(())
}

/// The first part of a cluster that accepts a connection.
fn answering() -> Option<String> {
    if UnixStream::connect(CONTAINERD_SOCKET).is_ok() {
        return Some(CONTAINERD_SOCKET.to_owned());
    }
    CONTROL_PLANE
        .iter()
        .find(|address| TcpStream::connect_timeout(address, Duration::from_secs(1)).is_ok())
        .map(SocketAddr::to_string)
}

/// Network namespaces of the cluster's pods (an address in the pod range) that no process
/// holds any more: only their mount keeps them, and with them the veths on the bridge.
fn remove_orphaned_pod_namespaces() -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Ok(());
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("cni-") {
            continue;
        }
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        let held = !ip(&["netns", "pids", &name])?.is_empty();
        let ours = ip(&["-n", &name, "-4", "-o", "addr", "show"])?.contains(POD_ADDRESS_PREFIX);
        if ours && !held {
            eprintln!("onebox: removing the orphaned pod network namespace {name}");
            ip(&["netns", "delete", &name])?;
        }
    }
    Ok(())
}

/// Unmounts what the kubelet mounted under a one-box folder (one that holds onebox.sh's
/// `containerd/config.toml` and `pki/` beside `kubelet/`): the pods' volumes and its own
/// bind mount of `kubelet/`, deepest first.
fn unmount_kubelet_mounts() -> anyhow::Result<()> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut targets: Vec<&str> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|target| {
            kubelet_owner(target).is_some_and(|folder| {
                let folder = Path::new(folder);
                folder.join("containerd/config.toml").is_file() && folder.join("pki").is_dir()
            })
        })
        .collect();
    targets.sort_unstable_by_key(|target| std::cmp::Reverse(target.len()));
    for target in targets {
        run(Command::new("umount").args(["--lazy", target]))?;
    }
    Ok(())
}

/// The folder whose `kubelet/` holds a mount target: `/d` for `/d/kubelet` and for
/// `/d/kubelet/pods/…`.
fn kubelet_owner(target: &str) -> Option<&str> {
    target
        .strip_suffix("/kubelet")
        .or_else(|| target.split_once("/kubelet/").map(|(folder, _)| folder))
}

#[cfg(test)]
mod tests {
    use super::kubelet_owner;

    #[test]
    fn a_mount_belongs_to_the_folder_whose_kubelet_holds_it() {
        assert_eq!(kubelet_owner("/t/box/kubelet"), Some("/t/box"));
        assert_eq!(
            kubelet_owner("/t/box/kubelet/pods/u/volumes/kubernetes.io~secret/token"),
            Some("/t/box")
        );
        assert_eq!(kubelet_owner("/t/box/kubeletx"), None);
        assert_eq!(kubelet_owner("/var/lib/docker"), None);
    }
}
