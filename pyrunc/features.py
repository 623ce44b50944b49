"""``pyrunc features``: the runtime-spec Features structure (features.md, features-linux.md).

Honest by construction: every list is read from the code that implements it (the mount
option tables of the rootfs builder, the capability and namespace names of the config
parser, the seccomp compiler's tables), so nothing is claimed that pyrunc would refuse.
CRI turns user namespaces on only when "user" is listed and idmap mounts are enabled, and
``rro`` when it is among the mount options.
"""

from __future__ import annotations

OCI_VERSION_MIN = "1.0.0"
HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]


def features(version: str, spec_version: str) -> dict:
    from .config import CAPABILITIES, NAMESPACE_TYPES
    from .init.rootfs import _CLEAR_FLAGS, _RECURSIVE, _SET_FLAGS, PROPAGATION

    mount_options = sorted({*_SET_FLAGS, *_CLEAR_FLAGS, *PROPAGATION, *_RECURSIVE, "idmap", "ridmap", "tmpcopyup"})
    out: dict = {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": spec_version,
        "hooks": list(HOOKS),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": True},
            "seccomp": _seccomp(),
            "apparmor": {"enabled": True},
            "selinux": {"enabled": True},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},  # pyrunc/netdevices.py
        },
        "annotations": {"org.opencontainers.pyrunc.version": version},
        "potentiallyUnsafeConfigAnnotations": [],  # pyrunc acts on no annotation
    }
    version_of_libseccomp = out["linux"]["seccomp"].pop("_version", "")
    if version_of_libseccomp:
        out["annotations"]["io.github.seccomp.libseccomp.version"] = version_of_libseccomp
    return out


def _seccomp() -> dict:
    """What pyrunc's seccomp compiler recognises, and which filter flags this kernel takes."""
    from . import seccomp
    try:
        lib = seccomp.libseccomp()
    except seccomp.SeccompError:  # no libseccomp: seccomp configs are refused, say so
        return {"enabled": False}
    known = sorted(seccomp.FLAGS)
    return {
        "enabled": True,
        "actions": sorted(seccomp.ACTIONS),
        "operators": sorted(seccomp.OPERATORS),
        "archs": sorted(lib.known_arches()),  # those the libseccomp we load knows
        "knownFlags": known,
        "supportedFlags": [f for f in known if lib.flag_supported(_probe_flags(seccomp, f))],
        "_version": lib.version,
    }


def _probe_flags(seccomp: object, name: str) -> int:
    flag: int = seccomp.FLAGS[name]  # type: ignore[attr-defined]
    if name == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV":
        flag |= seccomp.FLAG_NEW_LISTENER  # type: ignore[attr-defined]  # only valid together
    return flag
