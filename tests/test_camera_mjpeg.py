"""The MJPEG splitter on real JPEG bytes: frames come out whole and in order however the stream is
cut into reads; garbage, a truncated frame and an oversized one are each dropped and counted, the
next good frame comes out, and the buffer never holds more than the bound plus one read."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_runtime.serve.mjpeg import MjpegSplitter


def _jpeg(level: int, exif_thumbnail: bool = False, progressive: bool = False) -> bytes:
    rng = np.random.default_rng(level)
    pixels = np.clip(rng.normal(level, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    img, out = Image.fromarray(pixels), io.BytesIO()
    extra = {}
    if exif_thumbnail:  # APP1 holding a whole JPEG: its own SOI and EOI inside the frame
        thumb = io.BytesIO()
        img.resize((16, 12)).save(thumb, "JPEG")
        extra["extra"] = b""  # keep Pillow from complaining on old versions
        app1 = b"Exif\x00\x00" + thumb.getvalue()
        img.save(out, "JPEG", quality=80)
        data = out.getvalue()
        segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
        return data[:2] + segment + data[2:]
    img.save(out, "JPEG", quality=80, progressive=progressive)
    return out.getvalue()


FRAMES = [_jpeg(40), _jpeg(120, exif_thumbnail=True), _jpeg(200, progressive=True), _jpeg(90)]


def _split(stream: bytes, step: int, bound: int = 1 << 20) -> tuple[list[bytes], MjpegSplitter]:
    splitter, out, most = MjpegSplitter(bound), [], 0
    for at in range(0, len(stream), step):
        out += splitter.feed(stream[at : at + step])
        most = max(most, splitter.buffered)
    assert most <= bound + step, (most, bound, step)
    return out, splitter


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_frames_come_out_whole_and_in_order_whatever_the_reads(step):
    frames, splitter = _split(b"".join(FRAMES), step)
    assert frames == FRAMES and splitter.bad == 0
    assert all(Image.open(io.BytesIO(f)).size == (64, 48) for f in frames)


def test_garbage_between_frames_is_skipped_and_counted_once_per_run():
    noise = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    noise = noise.replace(b"\xff\xd8", b"\x00\x00")
    stream = b"junk" + FRAMES[0] + noise + FRAMES[1] + noise + FRAMES[2]
    frames, splitter = _split(stream, 333)
    assert frames == FRAMES[:3]
    assert splitter.bad == 3


def test_a_truncated_frame_is_dropped_and_the_next_one_kept():
    stream = FRAMES[0] + FRAMES[1][: len(FRAMES[1]) // 2] + FRAMES[2] + FRAMES[3][:-300]
    frames, splitter = _split(stream, 1000)
    assert frames == [FRAMES[0], FRAMES[2]]
    assert splitter.bad == 1  # the last one may still be coming: not counted yet
    assert splitter.feed(FRAMES[0]) == [FRAMES[0]] and splitter.bad == 2


def test_an_oversized_frame_is_dropped_with_bounded_memory_then_frames_resume():
    bound = 64 * 1024
    header = FRAMES[0][: FRAMES[0].index(b"\xff\xda")]
    huge = header + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x11" * (5 << 20)
    stream = FRAMES[0] + huge + FRAMES[1] + FRAMES[2]
    frames, splitter = _split(stream, 4096, bound)
    assert frames == FRAMES[:3]
    assert splitter.bad == 1
    # one that comes whole in a single read is refused as well
    small = MjpegSplitter(1024)
    assert small.feed(FRAMES[0] + FRAMES[1]) == [] and small.bad == 2


def test_a_broken_segment_resyncs_on_the_next_frame():
    broken = FRAMES[0][:2] + b"\xff\xe0\x00\x10" + b"\x42" * 14 + b"not a segment" + b"\x00" * 9
    frames, splitter = _split(broken + FRAMES[1], 5)
    assert frames == [FRAMES[1]] and splitter.bad == 1
