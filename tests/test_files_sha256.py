"""edge_runtime.files' one sha256 helper pair: a file read in chunks hashes as its bytes do."""

from __future__ import annotations

import hashlib

from edge_runtime.files import sha256_bytes, sha256_file


def test_sha256_file_reads_every_chunk(tmp_path):
    data = bytes(range(256)) * (3 * 4096) + b"tail!"  # 3 MiB + 5 bytes: four 1 MiB reads
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == want
    assert sha256_file(str(path)) == want
    assert sha256_bytes(data) == want
    assert sha256_bytes(b"") == hashlib.sha256(b"").hexdigest() != want
