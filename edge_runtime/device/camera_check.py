"""The doctor's camera line: a Camera Module through rpicam-vid (and `rpicam-hello
--list-cameras`), USB webcams at /dev/video*, and whether this user is in the `video` group."""

from __future__ import annotations

import getpass
import glob
import os
import re
import subprocess
from pathlib import Path

from edge_runtime.device.check import Check, find_tool

_LISTED = re.compile(r"^\s*\d+\s*:\s*(\S.*)$")


def video_devices(root: str = "/") -> list[str]:
    """The webcams' /dev/video* nodes (under `root`), in number order. Where sysfs tells, only
    USB ones: a Raspberry Pi's own codec and ISP nodes (/dev/video10..31) are no camera."""

    def number(path: str) -> int:
        tail = os.path.basename(path).removeprefix("video")
        return int(tail) if tail.isdigit() else 1 << 30

    nodes = sorted(glob.glob(os.path.join(root, "dev", "video*")), key=lambda p: (number(p), p))
    sysfs = os.path.join(root, "sys", "class", "video4linux")
    if not os.path.isdir(sysfs):
        return nodes
    return [
        n for n in nodes if "/usb" in os.path.realpath(os.path.join(sysfs, os.path.basename(n)))
    ]


GROUP_FIX = "sudo usermod -aG video $USER, then log in again (systemd units: Group=video)"


def listed_cameras(root: Path) -> list[str] | None:
    """The cameras `rpicam-hello --list-cameras` names (None without the tool or an answer)."""
    tool = find_tool(root, "rpicam-hello")
    if tool is None:
        return None
    try:
        proc = subprocess.run(
            [tool, "--list-cameras"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout + proc.stderr
    return [m.group(1).strip() for line in text.splitlines() if (m := _LISTED.match(line))]


def in_video_group(root: Path) -> bool | None:
    """Whether this user is in the `video` group by /etc/group (None when it has none)."""
    user = getpass.getuser()
    try:
        lines = (root / "etc" / "group").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, gid, members = (line.split(":") + ["", "", ""])[:4]
        if name != "video":
            continue
        if user == "root" or user in members.split(","):
            return True
        return root == Path("/") and gid.isdigit() and int(gid) in os.getgroups()
    return None


def camera_check(root: Path) -> Check:
    """One `Check` named camera: ok, warn (found but not usable as is) or skip (none)."""
    rpicam = find_tool(root, "rpicam-vid")
    listed = listed_cameras(root) if rpicam else None
    webcams = [os.path.join("/dev", os.path.basename(n)) for n in video_devices(str(root))]
    group = in_video_group(root)
    parts = []
    if rpicam:
        parts.append("rpicam-vid: " + ("; ".join(listed) if listed else "no camera listed"))
    if webcams:
        parts.append("webcams: " + ", ".join(webcams))
    if not parts:
        return Check(
            "camera",
            "skip",
            "no camera: no rpicam-vid, no USB /dev/video* "
            "(serve --camera needs one; docs/camera.md)",
        )
    detail = (
        "; ".join(parts)
        + {True: "; in group video", False: "; not in group video", None: ""}[group]
    )
    if group is False:
        return Check("camera", "warn", detail, GROUP_FIX)
    if rpicam and not listed and not webcams:
        return Check(
            "camera",
            "warn",
            detail,
            "check the ribbon cable and camera_auto_detect=1 in "
            "/boot/firmware/config.txt, then reboot",
        )
    return Check("camera", "ok", detail)
