"""`doctor` reports the camera: rpicam-vid and what `rpicam-hello --list-cameras` lists, the USB
webcams among /dev/video* (not a Pi's codec nodes), and the `video` group, on fake roots."""

from __future__ import annotations

import getpass
import os

from tests.test_edge_doctor import BOOKWORM, MEMINFO, by_name, cpuinfo, doctor, write_tree

LISTING = """Available cameras
-----------------
0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)
    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
"""


def _pi(tmp_path, *, cameras: str, members: str, usb: bool):
    root = write_tree(
        tmp_path / "pi",
        {
            "etc/os-release": BOOKWORM,
            "proc/cpuinfo": cpuinfo(4),
            "proc/meminfo": MEMINFO,
            "etc/group": f"root:x:0:\nvideo:x:44:{members}\n",
            "usr/bin/rpicam-hello": f"#!/bin/sh\ncat <<'END'\n{cameras}END\n",
            "usr/bin/rpicam-vid": "#!/bin/sh\nexit 0\n",
            "dev/video0": "",
            "dev/video10": "",
            "sys/devices/platform/soc/codec/video4linux/video10/name": "bcm2835-codec-decode",
            "sys/devices/platform/scb/usb1/1-1/video4linux/video0/name": "USB webcam",
        },
    )
    for tool in ("rpicam-hello", "rpicam-vid"):
        (root / "usr/bin" / tool).chmod(0o755)
    links = root / "sys/class/video4linux"
    links.mkdir(parents=True)
    os.symlink("../../devices/platform/soc/codec/video4linux/video10", links / "video10")
    if usb:
        os.symlink("../../devices/platform/scb/usb1/1-1/video4linux/video0", links / "video0")
    return root


def test_camera_module_and_webcam_listed_user_in_video(tmp_path):
    code, report = doctor(_pi(tmp_path, cameras=LISTING, members=getpass.getuser(), usb=True))
    camera = by_name(report)["camera"]
    assert camera["status"] == "ok", camera
    assert "imx708 [4608x2592 10-bit RGGB]" in camera["detail"]
    assert "webcams: /dev/video0" in camera["detail"] and "video10" not in camera["detail"]
    assert "in group video" in camera["detail"]


def test_not_in_video_group_or_no_camera_listed_warns_with_a_fix(tmp_path):
    user = getpass.getuser()
    if user == "root":  # root reads /dev/video* whatever the group says
        code, report = doctor(
            _pi(tmp_path, cameras="No cameras available!\n", members="", usb=False)
        )
    else:
        code, report = doctor(_pi(tmp_path, cameras=LISTING, members="someone", usb=False))
        camera = by_name(report)["camera"]
        assert camera["status"] == "warn" and "usermod -aG video" in camera["fix"]
        return
    camera = by_name(report)["camera"]
    assert camera["status"] == "warn" and "no camera listed" in camera["detail"], camera
    assert "camera_auto_detect=1" in camera["fix"] and code == 0


def test_no_camera_at_all_is_skipped(tmp_path):
    root = write_tree(tmp_path / "box", {"etc/os-release": BOOKWORM, "proc/meminfo": MEMINFO})
    camera = by_name(doctor(root)[1])["camera"]
    assert camera["status"] == "skip" and "no rpicam-vid" in camera["detail"]
